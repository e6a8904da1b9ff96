"""The ``openvino`` runtime: the module's ONNX export (``export``), read by OpenVINO and
compiled for the CPU.

The model is kept as OpenVINO IR (``.xml`` + ``.bin``) in the export cache, and
OpenVINO's own ``CACHE_DIR`` (``openvino/`` in the same folder) keeps the compiled blob:
a restart neither exports nor compiles again.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import openvino as ov
import torch

from ..model import Darknet
from .cache import ExportCache
from .export import write_onnx

# Whose versions name the export (beside torch): onnx and onnxscript write the ONNX graph
# that OpenVINO reads.
PACKAGES = ("openvino", "onnx", "onnxscript")

# fp32 asked is fp32 served: OpenVINO's CPU plugin otherwise runs bf16 wherever the CPU
# has it. INT8 (a model quantized by NNCF, a later step) will be another IR in the cache,
# under its own precision in the key, compiled the same way.
INFERENCE_PRECISION = {"fp32": "f32"}


def convert(network: Darknet) -> ov.Model:
    """The module as an OpenVINO model: any batch, the spec's input size."""
    with tempfile.TemporaryDirectory(prefix="pmr-onnx-") as folder:
        onnx_file = Path(folder) / "network.onnx"
        write_onnx(network, onnx_file)
        model = ov.Core().read_model(onnx_file)
    spec = network.spec
    model.reshape({model.input(0): ov.PartialShape([-1, 3, spec.height, spec.width])})
    return model


def build_openvino(network: Darknet, *, precision: str,
                   cache: ExportCache | None) -> OpenVinoRuntime:
    config: dict[str, str | int] = {
        # LATENCY: one stream, all the threads on each forward pass. THROUGHPUT's several
        # streams pay only with several requests in flight at once (asynchronous
        # requests fed by the batcher, a later step); one synchronous request would run
        # on one stream's share of the cores.
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": INFERENCE_PRECISION[precision],
        # As many threads as PyTorch has here (the batcher sets DETECTOR_THREADS on it).
        "INFERENCE_NUM_THREADS": torch.get_num_threads(),
    }
    core = ov.Core()
    stored: Path | None = None
    if cache is not None:
        stored = cache.stored(
            cache.path(network.spec, runtime="openvino", precision=precision,
                       packages=PACKAGES, suffix=".xml"),
            lambda staged: ov.save_model(convert(network), staged, compress_to_fp16=False))
        blobs = cache.folder("openvino")
        if blobs is not None:
            config["CACHE_DIR"] = str(blobs)
    # From a path, OpenVINO finds its compiled blob without reading the IR first.
    source = str(stored) if stored is not None else convert(network)
    return OpenVinoRuntime(core.compile_model(source, "CPU", config), path=stored)


class OpenVinoRuntime:
    name = "openvino"

    def __init__(self, compiled: ov.CompiledModel, *, path: Path | None) -> None:
        self.compiled = compiled
        self.path = path  # the IR it was compiled from (None: exported in memory)
        # One request, used by one thread at a time (Detector.forward holds a lock).
        self._request = compiled.create_infer_request()

    def __call__(self, batch: torch.Tensor) -> list[torch.Tensor]:
        pixels = batch.to("cpu", torch.float32).contiguous().numpy()
        # share_outputs=False (the default) copies each output out of the request's
        # buffers, which the next inference overwrites.
        outputs = self._request.infer({0: pixels}, share_inputs=True)
        return [torch.from_numpy(outputs[output]) for output in self.compiled.outputs]
