"""Exported models on disk, so that a worker's restart does not export again.

A file's name is its key: what it was made from (the sha256 of the darknet weights, the
network's spec with its input size, the precision) and by what (the runtime, and the
versions of the packages that wrote it, PyTorch's included). Other weights, another
input size or an upgraded package make another file; a file is never replaced by
different contents.

Files are written under a temporary name in the same folder, then renamed into place:
two workers starting together never read a half-written file (both write the same
bytes, and the second rename swaps the first's file for an identical one; a reader
that opened the first keeps reading it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from importlib.metadata import version
from pathlib import Path

from ..cfg import NetworkSpec
from ..fetch import sha256_of

logger = logging.getLogger(__name__)

# What an exported graph holds, as PMR builds it: raise it when that changes (e.g. when
# pre-processing moves into the graph), so that older exports are not read for new ones.
EXPORT_FORMAT = 1


class ExportCache:
    """A folder of exported models (by default ``compiled/`` beside the weights)."""

    def __init__(self, directory: str | Path, weights: str | Path) -> None:
        self.directory = Path(directory)
        self.weights = Path(weights)  # the darknet weights the network was loaded from
        self._weights_sha256: str | None = None
        self.written: list[Path] = []  # what this process exported (empty: all was read)

    @property
    def weights_sha256(self) -> str:
        if self._weights_sha256 is None:  # hashed when first needed: torch needs no export
            self._weights_sha256 = sha256_of(self.weights)
        return self._weights_sha256

    def path(self, spec: NetworkSpec, *, runtime: str, precision: str,
             packages: Sequence[str], suffix: str) -> Path:
        """Where the export of this network for ``runtime`` lives; ``packages`` are those
        (beside torch) whose versions decide what is written."""
        key = {
            "format": EXPORT_FORMAT,
            "weights_sha256": self.weights_sha256,
            # The layers as parsed (anchors, masks, sizes) and the input size; not the
            # cfg's path: the same network read from elsewhere is the same export.
            "network": repr(dataclasses.replace(spec, path="")),
            "runtime": runtime,
            "precision": precision,
            "versions": {package: version(package) for package in ("torch", *packages)},
        }
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        return self.directory / (f"{self.weights.stem}-{runtime}-{spec.width}x{spec.height}-"
                                 f"{precision}-{digest}{suffix}")

    def stored(self, path: Path, write: Callable[[Path], None], *,
               replace: bool = False) -> Path | None:
        """``path``, written first by ``write(staged)`` unless it exists already (or
        always, with ``replace``: a quantized model made again from other images).

        ``write`` may write companion files beside ``staged`` (OpenVINO's ``.bin`` beside
        its ``.xml``): they are renamed into place before the file itself, so that a
        reader who finds ``path`` finds them too. None when the folder cannot be written
        (a read-only weights volume): the caller then exports in memory, for this process.
        """
        if path.exists() and not replace:
            logger.info("reusing the exported model %s", path)
            return path
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=self.directory, prefix=".writing-"))
        except OSError as exc:
            logger.warning("cannot keep exported models in %s (%s): exporting for this "
                           "process only", self.directory, exc)
            return None
        try:
            logger.info("exporting the model to %s", path)
            staged = staging / path.name
            write(staged)
            for part in sorted(staging.iterdir(), key=lambda part: part == staged):
                os.replace(part, self.directory / part.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self.written.append(path)
        return path

    def folder(self, name: str) -> Path | None:
        """A subfolder for a runtime's own cache (OpenVINO's compiled blobs), created; None
        when it cannot be."""
        folder = self.directory / name
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            return None
        return folder if os.access(folder, os.W_OK) else None
