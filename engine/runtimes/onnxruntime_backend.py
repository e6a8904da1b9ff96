"""The ``onnxruntime`` runtime: the module exported to ONNX (``export``), run by ONNX
Runtime; the ``.onnx`` file is kept in the export cache.

On the CPU it runs with the CPU execution provider. On a CUDA device it uses the
TensorRT and CUDA execution providers that the installed build lists (the
``onnxruntime-gpu`` wheel has them; PyPI's ``onnxruntime`` has neither).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from ..model import Darknet
from .cache import ExportCache
from .export import export_onnx, write_onnx
from .torch_backend import FloatBatchRuntime

# Whose versions name the export (beside torch): onnx and onnxscript write the file, and
# ONNX Runtime's version is in the key too, as every runtime's is.
PACKAGES = ("onnxruntime", "onnx", "onnxscript")
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def cuda_providers() -> list[str]:
    """The GPU execution providers of the installed ONNX Runtime, best first."""
    available = ort.get_available_providers()
    return [provider for provider in GPU_PROVIDERS if provider in available]


def build_onnxruntime(network: Darknet, *, device: torch.device, precision: str,
                      cache: ExportCache | None) -> OnnxRuntime:
    options = ort.SessionOptions()
    # As many threads as PyTorch has here (the batcher sets DETECTOR_THREADS on it), on
    # one forward pass at a time.
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    providers: list[str | tuple[str, dict]] = ["CPUExecutionProvider"]
    if device.type == "cuda":
        index = {"device_id": device.index or 0}
        providers = [*((provider, index) for provider in cuda_providers()), *providers]
    stored: Path | None = None
    if cache is not None:
        stored = cache.stored(
            cache.path(network.spec, runtime="onnxruntime", precision=precision,
                       packages=PACKAGES, suffix=".onnx"),
            lambda staged: write_onnx(network, staged))
    source = (str(stored) if stored is not None
              else export_onnx(network).model_proto.SerializeToString())
    runtime = OnnxRuntime(ort.InferenceSession(source, options, providers=providers), path=stored)
    runtime.warm_start = stored is not None and not cache.written  # read, not exported
    return runtime


class OnnxRuntime(FloatBatchRuntime):
    """Takes PyTorch's letterboxed batch (on the CPU: the session reads host memory)."""

    name = "onnxruntime"
    warm_start = False

    def __init__(self, session: ort.InferenceSession, *, path: Path | None) -> None:
        self.session = session
        self.path = path  # the .onnx file it was loaded from (None: exported in memory)
        self._input = session.get_inputs()[0].name

    def __call__(self, inputs: torch.Tensor) -> list[torch.Tensor]:
        # On a CUDA device too the batch goes through host memory, and the heads come
        # back there (postprocess runs where the heads are); IO binding would keep them
        # on the GPU.
        pixels = inputs.to("cpu", torch.float32).contiguous().numpy()
        return [torch.from_numpy(head) for head in self.session.run(None, {self._input: pixels})]


def plain_forward(onnx_file: Path, threads: int) -> Callable[[np.ndarray], list[np.ndarray]]:
    """ONNX Runtime called the plain way, for the benchmark's comparison: a CPU session of
    the ONNX file on ``threads`` threads, a float batch in."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda blob: session.run(None, {name: blob})
