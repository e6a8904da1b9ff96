"""Inference runtimes: what runs the network's forward pass.

The darknet-built module (``model.Darknet``) is the single source of truth: every runtime
is built from the loaded module and returns the decoded heads that the module returns,
each (B, A, H, W, 5 + C) float32, for a batch of images. What it takes is its own:
``prepare`` turns the images into its inputs (the letterboxed float batch (B, 3, h, w)
of ``preprocess.letterbox_batch``, or for OpenVINO the pixels and darknet's resize
tables, letterboxed in its graph), and the letterbox boxes that map detections back.
Thresholds and NMS (``Detector.postprocess``) are shared. ``start`` begins a forward pass
and returns what waits for it; ``parallel`` passes can be under way at once (OpenVINO's
streams; 1 elsewhere).

- ``torch``: the module itself, eager PyTorch, on the CPU or CUDA, fp32 / bf16 / fp16.
- ``openvino``: the module exported to ONNX (``export``), read by OpenVINO and compiled
  for the CPU with the letterbox in the graph; fp32, or INT8 (a model that ``quantize``
  made with NNCF, calibrated on the user's images and checked against fp32).
- ``onnxruntime``: the same ONNX export, run by ONNX Runtime on the CPU (or with its
  CUDA / TensorRT execution providers, where the installed build has them); fp32.

The exported models are kept on disk (``cache.ExportCache``), so a restart does not
export again. Only this package's back-end modules import OpenVINO and ONNX Runtime, and
only when that runtime is built: importing ``engine.runtimes`` costs neither.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ..cfg import NetworkSpec
from ..model import Darknet
from ..preprocess import Letterbox
from .cache import ExportCache
from .torch_backend import TorchRuntime

# OpenVINO reports its import and each model conversion to Intel's usage telemetry
# (unless the user opted out, from a subprocess with a timeout per message) whenever its
# openvino_telemetry package imports. A self-hosted service does not call out: with that
# package blocked, OpenVINO takes its own no-op stub. Set before anything here imports
# OpenVINO.
sys.modules.setdefault("openvino_telemetry", None)

RUNTIMES = ("torch", "openvino", "onnxruntime")

# What each runtime needs installed beside PyTorch (pip names, which are also the
# import names). Both exported runtimes read what torch.onnx's exporter writes, which
# needs onnx and onnxscript.
PACKAGES: dict[str, tuple[str, ...]] = {
    "torch": (),
    "openvino": ("openvino", "onnx", "onnxscript"),
    "onnxruntime": ("onnxruntime", "onnx", "onnxscript"),
}

# The precisions each runtime serves; openvino's int8 once ``quantize`` made the model.
PRECISIONS: dict[str, tuple[str, ...]] = {
    "torch": ("fp32", "bf16", "fp16"),
    "openvino": ("fp32", "int8"),
    "onnxruntime": ("fp32",),
}


class Pending(Protocol):
    """A forward pass started: ``result`` waits for it (raising what it raised)."""

    def result(self) -> list[torch.Tensor]: ...


class Runtime(Protocol):
    """A forward pass: images prepared as the runtime takes them, the decoded heads out."""

    name: str  # one of RUNTIMES
    parallel: int  # forward passes that can be under way at once
    warm_start: bool  # built from the export cache alone, nothing exported or compiled

    def prepare(self, images: Sequence[np.ndarray], width: int, height: int, *,
                letter_box: bool = True) -> tuple[Any, list[Letterbox]]:
        """(H, W, 3) uint8 RGB images -> this runtime's inputs for them, and where each
        image sits in them (letterboxed, or stretched when ``letter_box`` is false)."""
        ...

    def start(self, inputs: Any) -> Pending:
        """Begin a forward pass (at once, where the runtime has no requests of its own)."""
        ...

    def __call__(self, inputs: Any) -> list[torch.Tensor]:
        """Inputs -> one (B, A, H, W, 5 + C) float32 tensor per YOLO head."""
        ...


def missing_packages(runtime: str) -> list[str]:
    """The runtime's packages that do not import here. A real import attempt each time
    (cheap once imported): a package that is absent, or hidden from the process, counts
    as missing."""
    missing = []
    for package in PACKAGES[runtime]:
        try:
            importlib.import_module(package)
        except ImportError:
            missing.append(package)
    return missing


def is_installed(runtime: str) -> bool:
    return not missing_packages(runtime)


def require(runtime: str) -> None:
    """A ValueError naming the runtime's packages to install, unless they import."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r} (auto, {', '.join(RUNTIMES)})")
    missing = missing_packages(runtime)
    if missing:
        raise ValueError(f"the {runtime} runtime was asked for, but {' and '.join(missing)} "
                         f"{'is' if len(missing) == 1 else 'are'} not installed: "
                         f"pip install {' '.join(missing)} (requirements.txt pins the versions)")


def devices(runtime: str) -> tuple[str, ...]:
    """The device types the runtime can run on here."""
    if runtime == "onnxruntime":
        from .onnxruntime_backend import cuda_providers  # imports onnxruntime: only when asked

        return ("cpu", "cuda") if cuda_providers() else ("cpu",)
    return ("cpu", "cuda") if runtime == "torch" else ("cpu",)


# An INT8 model serves in place of fp32 (``auto``) only where its accuracy check passed:
# mAP@0.5 on the evaluation set within this many points of fp32's.
INT8_TOLERANCE_POINTS = 1.0


def int8_record_path(cache: ExportCache, spec: NetworkSpec) -> Path | None:
    """Where the record of the INT8 model's check is kept, beside its IR (None where
    OpenVINO is not installed: no INT8 model can be)."""
    try:
        return cache.path(spec, runtime="openvino", precision="int8",
                          packages=PACKAGES["openvino"], suffix=".json")
    except PackageNotFoundError:
        return None


def int8_record(cache: ExportCache, spec: NetworkSpec) -> dict | None:
    """The record that ``quantize`` wrote beside the INT8 model, if there is one."""
    path = int8_record_path(cache, spec)
    if path is None or not path.is_file() or not path.with_suffix(".xml").is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def int8_passed(cache: ExportCache | None, spec: NetworkSpec) -> bool:
    """Whether an INT8 model of these weights exists and passed its accuracy check."""
    if cache is None:
        return False
    record = int8_record(cache, spec)
    return (record is not None and record.get("passed") is True
            and record.get("weights_sha256") == cache.weights_sha256)


def build_runtime(runtime: str, network: Darknet, *, device: torch.device, precision: str,
                  cache: ExportCache | None, streams: int = 1) -> Runtime:
    """The runtime ``runtime`` for the loaded ``network``, in ``precision`` (one of
    ``PRECISIONS[runtime]``, see ``detector.resolve_precision``); exported where it is
    not torch (or its export read from ``cache``; with no cache, exported in memory).
    ``streams``: forward passes at once, for OpenVINO (the others run one at a time)."""
    require(runtime)
    if runtime == "torch":
        return TorchRuntime(network, device=device, precision=precision)
    # The back-ends are imported here, not above: each imports its optional package.
    if runtime == "openvino":
        from .openvino_backend import build_openvino

        return build_openvino(network, precision=precision, cache=cache, streams=streams)
    from .onnxruntime_backend import build_onnxruntime

    return build_onnxruntime(network, device=device, precision=precision, cache=cache)


__all__ = ["INT8_TOLERANCE_POINTS", "PRECISIONS", "RUNTIMES", "ExportCache", "Pending",
           "Runtime", "build_runtime", "devices", "int8_passed", "int8_record",
           "int8_record_path", "is_installed", "require"]
