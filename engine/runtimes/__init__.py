"""Inference runtimes: what runs the network's forward pass.

The darknet-built module (``model.Darknet``) is the single source of truth: every runtime
is built from the loaded module, takes the letterboxed float batch (B, 3, h, w) that
``Detector.preprocess`` makes, and returns the decoded heads that the module returns,
each (B, A, H, W, 5 + C) float32. Thresholds and NMS (``Detector.postprocess``) are shared.

- ``torch``: the module itself, eager PyTorch, on the CPU or CUDA, fp32 / bf16 / fp16.
- ``openvino``: the module exported to ONNX (``export``), read by OpenVINO and compiled
  for the CPU; fp32.
- ``onnxruntime``: the same ONNX export, run by ONNX Runtime on the CPU (or with its
  CUDA / TensorRT execution providers, where the installed build has them); fp32.

The exported models are kept on disk (``cache.ExportCache``), so a restart does not
export again. Only this package's back-end modules import OpenVINO and ONNX Runtime, and
only when that runtime is built: importing ``engine.runtimes`` costs neither.
"""

from __future__ import annotations

import importlib
import sys
from typing import Protocol

import torch

from ..model import Darknet
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

# The precisions each runtime serves. INT8 joins openvino's when quantized models exist
# (NNCF, a later step); the cache key already carries the precision.
PRECISIONS: dict[str, tuple[str, ...]] = {
    "torch": ("fp32", "bf16", "fp16"),
    "openvino": ("fp32",),
    "onnxruntime": ("fp32",),
}


class Runtime(Protocol):
    """A forward pass: a letterboxed float batch in, the decoded heads out."""

    name: str  # one of RUNTIMES

    def __call__(self, batch: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, h, w) float -> one (B, A, H, W, 5 + C) float32 tensor per YOLO head."""
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


def build_runtime(runtime: str, network: Darknet, *, device: torch.device, precision: str,
                  cache: ExportCache | None) -> Runtime:
    """The runtime ``runtime`` for the loaded ``network``, in ``precision`` (one of
    ``PRECISIONS[runtime]``, see ``detector.resolve_precision``); exported where it is
    not torch (or its export read from ``cache``; with no cache, exported in memory)."""
    require(runtime)
    if runtime == "torch":
        return TorchRuntime(network, device=device, precision=precision)
    # The back-ends are imported here, not above: each imports its optional package.
    if runtime == "openvino":
        from .openvino_backend import build_openvino

        return build_openvino(network, precision=precision, cache=cache)
    from .onnxruntime_backend import build_onnxruntime

    return build_onnxruntime(network, device=device, precision=precision, cache=cache)


__all__ = ["PRECISIONS", "RUNTIMES", "ExportCache", "Runtime", "build_runtime", "devices",
           "is_installed", "require"]
