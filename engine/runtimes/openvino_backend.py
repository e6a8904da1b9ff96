"""The ``openvino`` runtime: the module's ONNX export (``export``), read by OpenVINO and
compiled for the CPU, with darknet's letterbox in the same graph; fp32, or INT8 from a
model that ``quantize`` made.

The network is kept as OpenVINO IR (``.xml`` + ``.bin``) in the export cache: the fp32
export, and the INT8 model where one was quantized. At start-up the letterbox is put in
front of it (``with_letterbox``) and the whole graph compiled; OpenVINO's own
``CACHE_DIR`` (``openvino/`` in the same folder) keeps the compiled blob, so a restart
neither exports nor compiles again (it reads the IR and hashes it to find the blob).

**The letterbox in the graph.** The graph takes the pixels as uint8 and does all of
darknet's arithmetic itself: uint8 to float32 (a 256-entry table of darknet's
``v / 255.``), the horizontal pass ``(1 - dx) * a + dx * b``, then the vertical pass
``(1 - dy) * top + dy * bottom``, each product and sum in float32 in darknet's order,
then the 0.5 gray fill and the planar layout the network reads. The per-image numbers
(which two columns and rows each output pixel blends, and their weights: ``x * (w - 1)
/ (new_w - 1)`` in float32, the last row and column as darknet treats them) come from
``preprocess.ResizeTables``, the same tables the PyTorch letterbox applies, and so do the
source pixels they index (``preprocess.letterbox_tables``: a copy of the rows and
columns read, no arithmetic). The result equals ``preprocess.letterbox`` bit for bit
(tests/test_engine_runtimes.py).

OpenVINO's own resize cannot be that exact: ``Interpolate`` with ``align_corners``
computes the source position as ``x * (w - 1)`` then divides (darknet multiplies by a
rounded scale), blends the four neighbours in one step, and reads the last input row
for the last output row where darknet, whose position falls a hair short of it for
some sizes, blends in the row above with a weight of ~0; measured on dog.jpg it is off
by up to 1.8e-7 on 38 % of the entries. A ``Divide`` by 255 is not exact either: the CPU
plugin multiplies by the reciprocal (off by one ulp on 23 % of the entries).
"""

from __future__ import annotations

import queue
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import torch

from ..model import Darknet
from ..preprocess import TABLE_INPUTS, UNIT_LEVELS, Letterbox, letterbox_tables
from . import PACKAGES as RUNTIME_PACKAGES
from .cache import ExportCache
from .export import write_onnx

# Whose versions name the export (beside torch): onnx and onnxscript write the ONNX graph
# that OpenVINO reads.
PACKAGES = RUNTIME_PACKAGES["openvino"]

# fp32 asked is fp32 served: OpenVINO's CPU plugin otherwise runs bf16 wherever the CPU
# has it. In an INT8 model what was not quantized (the heads' decode) runs in fp32 too.
INFERENCE_PRECISION = {"fp32": "f32", "int8": "f32"}


class NotQuantized(ValueError):
    """INT8 was asked for, and no quantized model exists for these weights."""


def convert(network: Darknet) -> ov.Model:
    """The module as an OpenVINO model: any batch, the spec's input size, a float input."""
    with tempfile.TemporaryDirectory(prefix="pmr-onnx-") as folder:
        onnx_file = Path(folder) / "network.onnx"
        write_onnx(network, onnx_file)
        model = ov.Core().read_model(onnx_file)
    spec = network.spec
    model.reshape({model.input(0): ov.PartialShape([-1, 3, spec.height, spec.width])})
    return model


def ir_path(network: Darknet, cache: ExportCache, precision: str) -> Path:
    """Where the network's IR in ``precision`` is (or would be) kept."""
    return cache.path(network.spec, runtime="openvino", precision=precision,
                      packages=PACKAGES, suffix=".xml")


def network_model(network: Darknet, *, precision: str, cache: ExportCache | None) -> ov.Model:
    """The network alone (a letterboxed float batch in, the decoded heads out): the fp32
    export (written to the cache first if it is not there), or the quantized INT8 model."""
    core = ov.Core()
    if precision == "int8":
        path = ir_path(network, cache, "int8") if cache is not None else None
        if path is None or not path.exists():
            raise NotQuantized("no INT8 model for these weights at this input size (or one "
                               "made by other package versions): run "
                               "'python manage.py quantize' first")
        return core.read_model(path)
    if cache is not None:
        stored = cache.stored(ir_path(network, cache, "fp32"),
                              lambda staged: ov.save_model(convert(network), staged,
                                                           compress_to_fp16=False))
        if stored is not None:
            return core.read_model(stored)
    return convert(network)


def letterbox_graph(width: int, height: int) -> tuple[list[ov.Node], ov.Output]:
    """darknet's letterbox as OpenVINO operations: the parameters (``TABLE_INPUTS``, as
    ``preprocess.letterbox_tables`` fills them) and the (B, 3, height, width) float32
    output. See the module's doc."""
    batch, rows, cols = -1, -1, -1
    shapes = {
        "pixels": ([batch, 3, rows, cols], ov.Type.u8),
        "row_first": ([batch, height], ov.Type.i32), "row_second": ([batch, height], ov.Type.i32),
        "row_top": ([batch, height], ov.Type.f32), "row_bottom": ([batch, height], ov.Type.f32),
        "col_first": ([batch, width], ov.Type.i32), "col_second": ([batch, width], ov.Type.i32),
        "col_left": ([batch, width], ov.Type.f32), "col_right": ([batch, width], ov.Type.f32),
        "inside": ([batch, height, width], ov.Type.boolean),
    }
    inputs = {name: ops.parameter(shapes[name][0], shapes[name][1], name=name)
              for name in TABLE_INPUTS}
    for name, parameter in inputs.items():
        parameter.output(0).get_tensor().set_names({name})

    def axes(*numbers: int) -> ov.Node:
        return ops.constant(np.array(numbers, np.int64))

    def pick(data: ov.Node | ov.Output, index: str, axis: int) -> ov.Node:
        # Per image (batch_dims=1): image i's table indexes image i's pixels.
        return ops.gather(data, inputs[index], ops.constant(np.int64(axis)), 1)

    def unit(samples: ov.Node) -> ov.Node:  # uint8 -> darknet's v / 255. in float32
        return ops.gather(ops.constant(UNIT_LEVELS), ops.convert(samples, "i32"),
                          ops.constant(np.int64(0)))

    pixels = inputs["pixels"]  # (B, 3, r, c) uint8
    left = ops.multiply(unit(pick(pixels, "col_first", 3)),
                        ops.unsqueeze(inputs["col_left"], axes(1, 2)))
    right = ops.multiply(unit(pick(pixels, "col_second", 3)),
                         ops.unsqueeze(inputs["col_right"], axes(1, 2)))
    rows_resampled = ops.add(left, right)  # (B, 3, r, width)
    top = ops.multiply(pick(rows_resampled, "row_first", 2),
                       ops.unsqueeze(inputs["row_top"], axes(1, 3)))
    bottom = ops.multiply(pick(rows_resampled, "row_second", 2),
                          ops.unsqueeze(inputs["row_bottom"], axes(1, 3)))
    resized = ops.add(top, bottom)  # (B, 3, height, width)
    filled = ops.select(ops.unsqueeze(inputs["inside"], axes(1)), resized,
                        ops.constant(np.float32(0.5)))
    return list(inputs.values()), filled.output(0)


def with_letterbox(model: ov.Model, width: int, height: int) -> ov.Model:
    """``model`` (one float input of (B, 3, height, width)) with the letterbox in front."""
    parameters, letterboxed = letterbox_graph(width, height)
    (network_input,) = model.get_parameters()
    for consumer in network_input.output(0).get_target_inputs():
        consumer.replace_source_output(letterboxed)
    return ov.Model(model.get_results(), parameters, model.get_friendly_name())


def letterbox_model(width: int, height: int) -> ov.Model:
    """The letterbox alone (its output is the network's input): for tests."""
    parameters, letterboxed = letterbox_graph(width, height)
    return ov.Model([ops.result(letterboxed)], parameters, "letterbox")


def compile_config(*, precision: str, streams: int) -> dict[str, str | int]:
    config: dict[str, str | int] = {
        "INFERENCE_PRECISION_HINT": INFERENCE_PRECISION[precision],
        # As many threads as PyTorch has here (the batcher sets DETECTOR_THREADS on it).
        "INFERENCE_NUM_THREADS": torch.get_num_threads(),
    }
    if streams > 1:
        # THROUGHPUT: ``streams`` forward passes at once, the threads shared among them;
        # the batcher keeps that many requests in flight (engine.batching).
        config.update({"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": streams})
    else:
        # LATENCY: one stream, all the threads on each forward pass.
        config["PERFORMANCE_HINT"] = "LATENCY"
    return config


def build_openvino(network: Darknet, *, precision: str, cache: ExportCache | None,
                   streams: int = 1) -> OpenVinoRuntime:
    config = compile_config(precision=precision, streams=streams)
    if cache is not None:
        blobs = cache.folder("openvino")
        if blobs is not None:
            config["CACHE_DIR"] = str(blobs)
    spec = network.spec
    model = with_letterbox(network_model(network, precision=precision, cache=cache),
                           spec.width, spec.height)
    compiled = ov.Core().compile_model(model, "CPU", config)
    path = ir_path(network, cache, precision) if cache is not None else None
    runtime = OpenVinoRuntime(compiled, path=path if path is not None and path.exists() else None,
                              requests=max(1, streams))
    # Warm: nothing exported, and the compiled blob read from CACHE_DIR.
    runtime.warm_start = (cache is not None and not cache.written
                          and bool(compiled.get_property("LOADED_FROM_CACHE")))
    return runtime


class PendingInference:
    """A forward pass under way on one of the runtime's infer requests."""

    def __init__(self, runtime: OpenVinoRuntime, request: ov.InferRequest,
                 inputs: dict[str, np.ndarray]) -> None:
        self._runtime = runtime
        self._request: ov.InferRequest | None = request
        self._inputs = inputs  # shared with the request (share_inputs): kept alive here
        self._heads: list[torch.Tensor] | None = None

    def result(self) -> list[torch.Tensor]:
        if self._heads is None:
            request, self._request = self._request, None
            assert request is not None
            try:
                request.wait()  # raises what the inference raised
                # Copied: the request's buffers are overwritten by its next inference.
                self._heads = [torch.from_numpy(request.get_output_tensor(index).data.copy())
                               for index in range(len(self._runtime.compiled.outputs))]
            finally:
                self._runtime._idle.put(request)
        return self._heads


class OpenVinoRuntime:
    name = "openvino"
    warm_start = False  # whether it started from the cache, exporting and compiling nothing

    def __init__(self, compiled: ov.CompiledModel, *, path: Path | None, requests: int) -> None:
        self.compiled = compiled
        self.path = path  # the network's IR (None: exported in memory)
        # Forward passes that can run at once: one infer request per stream.
        self.parallel = requests
        self._idle: queue.Queue[ov.InferRequest] = queue.Queue()
        for _ in range(requests):
            self._idle.put(compiled.create_infer_request())

    def prepare(self, images: Sequence[np.ndarray], width: int, height: int, *,
                letter_box: bool = True) -> tuple[dict[str, np.ndarray], list[Letterbox]]:
        return letterbox_tables(images, width, height, letter_box=letter_box)

    def start(self, inputs: dict[str, np.ndarray]) -> PendingInference:
        """Start a forward pass on an idle request (waiting for one if all are busy)."""
        request = self._idle.get()
        try:
            request.start_async(inputs, share_inputs=True)
        except BaseException:
            self._idle.put(request)
            raise
        return PendingInference(self, request, inputs)

    def __call__(self, inputs: dict[str, np.ndarray]) -> list[torch.Tensor]:
        return self.start(inputs).result()


def plain_forward(model_file: Path, threads: int) -> Callable[[np.ndarray], list[np.ndarray]]:
    """OpenVINO called the plain way, for the benchmark's comparison: the model file
    compiled with the defaults and ``threads`` threads, a float batch in, one synchronous
    request at a time."""
    compiled = ov.Core().compile_model(str(model_file), "CPU", {"INFERENCE_NUM_THREADS": threads})
    request = compiled.create_infer_request()
    return lambda blob: [request.infer({0: blob})[output] for output in compiled.outputs]
