"""Throughput of this engine's runtimes against the runtimes a user would call instead,
measured side by side in one run.

Entrants, on the same JPEG files and the same number of threads:

- **PMR**, every runtime available here (``engine.runtimes``): torch fp32 (and bf16 where
  the CPU has it natively), OpenVINO fp32 (and INT8 where ``quantize`` made a model of
  these weights), ONNX Runtime fp32. *Whole pipeline*: JPEG decode in a thread of its
  own, running ahead, while the detector pre-processes and starts passes
  (``Detector.start_each``, OpenVINO's two streams kept busy) and post-processes the
  previous one — what a worker does. *Forward only*: ``Detector.forward`` on prepared
  inputs (for OpenVINO that includes its letterbox, which is in its graph).
- **Plain loops**, each runtime called the obvious way: decode (``cv2.imdecode``), a
  simple ``cv2.resize`` to the network size (no letterbox), forward, threshold and
  ``cv2.dnn.NMSBoxes`` per class, one step after the other: OpenCV DNN
  (``readNetFromDarknet``), ONNX Runtime and OpenVINO (on the ONNX file PMR exports, as a
  user who exported the model would; OpenVINO also on the INT8 model where there is one).

Each configuration is timed in interleaved rounds (A B C A B C ...) so that a noisy,
shared machine slows all of them alike; figures are medians over rounds. Each is also
given as its share of the CPU's fp32 matrix-multiply rate (a 2048 x 2048 torch matmul on
the same threads): images/s x the network's GFLOP per image / that rate. A per-stage
table (decode, letterbox, forward, heads + NMS) says where PMR's time goes.
"""

from __future__ import annotations

import contextlib
import platform
import re
import statistics
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import cv2
import numpy as np
import torch

from . import runtimes
from .cfg import NetworkSpec, parse_cfg
from .detector import COMPILED_DIR, Detector, cpu_has_native_bf16, read_names
from .image import decode_image
from .model import Darknet
from .weights import random_darknet_weights, read_darknet_weights, write_darknet_weights

MIN_CONFIDENCE, IOU = 0.25, 0.45


@dataclass
class Measurement:
    model: str
    weights: str  # "official" or "random"
    entrant: str  # "pmr" or "plain" (the runtime called the obvious way)
    runtime: str  # torch, openvino, onnxruntime, opencv-dnn
    precision: str
    device: str
    mode: str  # "pipeline" (JPEG to detections) or "forward"
    batch: int
    input_size: int
    ms_per_image: float
    images_per_second: float
    gemm_share: float | None  # of the CPU's measured fp32 matmul rate
    rounds: int


@dataclass
class Stages:
    """Where PMR's whole pipeline spends its time, per image (medians over rounds), with
    each stage run alone, one after the other."""

    model: str
    runtime: str
    precision: str
    batch: int
    decode_ms: float
    letterbox_ms: float  # OpenVINO: only the tables; the arithmetic is in forward_ms
    forward_ms: float
    postprocess_ms: float  # heads -> thresholds -> class-aware NMS


def gemm_gflops(size: int = 2048, repeats: int = 5) -> float:
    """The CPU's fp32 matrix-multiply rate on PyTorch's threads, GFLOP/s (best of
    ``repeats``, after one warm-up)."""
    a, b = torch.rand(size, size), torch.rand(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def network_gflops(network: Darknet) -> float:
    """GFLOP of one image's forward pass: 2 x the multiply-adds of every convolution."""
    spec = network.spec
    flops = 0

    def count(module: torch.nn.Conv2d, inputs, output: torch.Tensor) -> None:
        nonlocal flops
        kh, kw = module.kernel_size
        flops += (2 * (module.in_channels // module.groups) * kh * kw * output[0].numel())

    hooks = [m.register_forward_hook(count) for m in network.modules()
             if isinstance(m, torch.nn.Conv2d)]
    try:
        with torch.inference_mode():
            network.to("cpu", torch.float32)(torch.zeros(1, 3, spec.height, spec.width))
    finally:
        for hook in hooks:
            hook.remove()
    return flops / 1e9


def cpu_model() -> str:
    """The CPU's name (Linux's /proc/cpuinfo), else what Python's platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cfg_with_size(cfg: Path, size: int, folder: Path) -> Path:
    """The cfg itself, or a copy whose [net] width and height are ``size``."""
    spec = parse_cfg(cfg)
    if spec.width == spec.height == size:
        return cfg
    text = re.sub(r"(?m)^(\s*width\s*=).*$", rf"\g<1>{size}", cfg.read_text(), count=1)
    text = re.sub(r"(?m)^(\s*height\s*=).*$", rf"\g<1>{size}", text, count=1)
    patched = folder / cfg.name
    patched.write_text(text)
    return patched


def _chunks(items: Sequence, size: int) -> list:
    return [items[start:start + size] for start in range(0, len(items), size)]


# --- PMR ---------------------------------------------------------------------------------

def _overlapped(detector: Detector, started) -> None:
    """Wait for the passes ``started`` yields (each started as it is drawn), keeping as
    many under way at once as the runtime runs; then for the device."""
    in_flight: deque = deque()
    for pending in started:
        in_flight.append(pending)
        if len(in_flight) >= detector.parallel_passes:
            in_flight.popleft().result()
    while in_flight:
        in_flight.popleft().result()
    if detector.device.type == "cuda":
        torch.cuda.synchronize(detector.device)


def _pmr_pipeline(detector: Detector, jpegs: list[bytes]) -> Callable[[], None]:
    options = detector.options(min_confidence=MIN_CONFIDENCE, iou_threshold=IOU)
    chunks = _chunks(jpegs, detector.max_batch)

    def decode(chunk: list[bytes]) -> list[np.ndarray]:
        return [decode_image(data) for data in chunk]

    def run() -> None:
        # Decoding runs ahead in its own thread (PIL releases the GIL), as a worker's task
        # threads decode while its inference thread runs; passes overlap where the
        # runtime runs several at once.
        with ThreadPoolExecutor(1, thread_name_prefix="pmr-decode") as decoder:
            _overlapped(detector, (detector.start_each(images, [options] * len(images))
                                   for images in decoder.map(decode, chunks)))

    return run


def _pmr_forward(detector: Detector, images: list[np.ndarray], count: int) -> Callable[[], None]:
    inputs, _ = detector.preprocess(images[:detector.max_batch])
    passes = -(-count // detector.max_batch)

    def run() -> None:
        _overlapped(detector, (detector.start(inputs) for _ in range(passes)))

    return run


def _pmr_stages(detector: Detector, jpegs: list[bytes]) -> Callable[[], dict[str, float]]:
    """One round of the pipeline, stage by stage: seconds per stage."""
    options = detector.options(min_confidence=MIN_CONFIDENCE, iou_threshold=IOU)

    def run() -> dict[str, float]:
        spent = dict.fromkeys(("decode", "letterbox", "forward", "postprocess"), 0.0)
        for chunk in _chunks(jpegs, detector.max_batch):
            clock = time.perf_counter()
            images = [decode_image(data) for data in chunk]
            spent["decode"] += time.perf_counter() - clock
            clock = time.perf_counter()
            inputs, boxes = detector.preprocess(images)
            spent["letterbox"] += time.perf_counter() - clock
            clock = time.perf_counter()
            heads = detector.forward(inputs)
            spent["forward"] += time.perf_counter() - clock
            clock = time.perf_counter()
            detector.postprocess(heads, boxes, [options] * len(images))
            spent["postprocess"] += time.perf_counter() - clock
        return spent

    return run


def our_configurations(device: str, precisions: Sequence[str] | None,
                       runtime_names: Sequence[str] | None) -> list[tuple[str, str]]:
    """(runtime, precision) of PMR to time here: every installed runtime that runs on
    ``device``, in the precisions it serves (INT8 added later, where a model exists)."""
    chosen = []
    on_cuda = device.startswith("cuda")
    for runtime in runtime_names or runtimes.RUNTIMES:
        if not runtimes.is_installed(runtime):
            continue
        if runtime == "torch":
            wanted = ["fp16"] if on_cuda else ["fp32", *(["bf16"] if cpu_has_native_bf16() else [])]
        elif on_cuda:
            continue
        else:
            wanted = ["fp32", "int8"] if runtime == "openvino" else ["fp32"]
        chosen += [(runtime, p) for p in wanted if precisions is None or p in precisions]
    return chosen


# --- plain loops ---------------------------------------------------------------------------

def _decode_cv2(data: bytes) -> np.ndarray:
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _simple_blob(images: list[np.ndarray], size: int) -> np.ndarray:
    """A simple resize to the network size (no letterbox), planar, in [0, 1]."""
    resized = np.stack([cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
                        for image in images])
    return np.ascontiguousarray(resized.transpose(0, 3, 1, 2), dtype=np.float32) / 255


def _nms(rows: np.ndarray, scores: np.ndarray, image: np.ndarray) -> list:
    """rows (N, >= 4) [cx, cy, w, h] as fractions, scores (N, C): per-class NMSBoxes."""
    height, width = image.shape[:2]
    found = []
    for class_id in np.nonzero((scores > MIN_CONFIDENCE).any(axis=0))[0]:
        keep = scores[:, class_id] > MIN_CONFIDENCE
        boxes = rows[keep, :4] * [width, height, width, height]
        boxes[:, :2] -= boxes[:, 2:] / 2
        picked = cv2.dnn.NMSBoxes(boxes.tolist(), scores[keep, class_id].tolist(),
                                  MIN_CONFIDENCE, IOU)
        found.extend((class_id, boxes[i]) for i in np.asarray(picked).reshape(-1))
    return found


def _postprocess_heads(heads: list[np.ndarray], images: list[np.ndarray]) -> None:
    """PMR's exported heads (B, A, H, W, 5 + C): score = objectness x class probability."""
    rows = np.concatenate([h.reshape(h.shape[0], -1, h.shape[-1]) for h in heads], axis=1)
    for index, image in enumerate(images):
        _nms(rows[index], rows[index, :, 4:5] * rows[index, :, 5:], image)


def _postprocess_opencv(heads: list[np.ndarray], images: list[np.ndarray]) -> None:
    """OpenCV's region rows [cx, cy, w, h, objectness, class scores (already x obj)]."""
    for index, image in enumerate(images):
        rows = np.concatenate([h[index] if h.ndim == 3 else h for h in heads], axis=0)
        _nms(rows, rows[:, 5:], image)


def _plain_runners(forward: Callable[[np.ndarray], list[np.ndarray]],
                   post: Callable[[list[np.ndarray], list[np.ndarray]], None],
                   jpegs: list[bytes], batch: int, size: int,
                   blob_of: Callable[[list[np.ndarray]], np.ndarray] | None = None
                   ) -> tuple[Callable[[], None], Callable[[], None]]:
    """(whole pipeline, forward only) of a plain loop."""
    blob_of = blob_of or (lambda images: _simple_blob(images, size))
    chunks = _chunks(jpegs, batch)
    prepared = blob_of([_decode_cv2(data) for data in chunks[0]])

    def pipeline() -> None:
        for chunk in chunks:
            images = [_decode_cv2(data) for data in chunk]
            post(forward(blob_of(images)), images)

    def forward_only() -> None:
        for _ in chunks:
            forward(prepared)

    return pipeline, forward_only


def _opencv_forward(cfg: Path, weights: Path, threads: int):
    cv2.setNumThreads(threads)
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    outputs = net.getUnconnectedOutLayersNames()

    def forward(blob: np.ndarray) -> list[np.ndarray]:
        net.setInput(blob)
        return list(net.forward(outputs))

    return forward


# --- the run -------------------------------------------------------------------------------

def run_benchmark(*, model: str, cfg: Path, weights: Path | None, names: Path | None,
                  jpegs: list[bytes], batches: tuple[int, ...], device: str, rounds: int,
                  peers: bool = True, precisions: Sequence[str] | None = None,
                  runtime_names: Sequence[str] | None = None, input_size: int | None = None,
                  gemm: float | None = None, log: Callable[[str], None] = print
                  ) -> tuple[list[Measurement], list[Stages]]:
    """Time every configuration over ``rounds`` interleaved rounds of all ``jpegs``."""
    spec = parse_cfg(cfg, input_size)
    size = spec.width
    threads = torch.get_num_threads()
    decoded = [decode_image(data) for data in jpegs]
    with tempfile.TemporaryDirectory() as tmp:
        official = weights is not None
        if weights is None:
            weights = Path(tmp) / f"{model}-random.weights"
            write_darknet_weights(weights, spec,
                                  random_darknet_weights(spec, seed=0, objectness_bias=-6.0))
        # Official weights: their export cache beside them (where quantize puts INT8).
        cache_dir = weights.parent / COMPILED_DIR if official else Path(tmp) / COMPILED_DIR
        _, blocks = read_darknet_weights(weights, spec)
        class_names = read_names(names) if names else [f"class{i}" for i in range(spec.classes)]

        def network() -> Darknet:
            built = Darknet(spec)
            built.load_weights(blocks)
            return built

        gflops = spec_gflops(spec)
        cache = runtimes.ExportCache(cache_dir, weights)
        runners: dict[tuple, Callable[[], None]] = {}
        stage_runners: dict[tuple, Callable[[], dict[str, float]]] = {}
        onnx_file: Path | None = None
        for runtime, precision in our_configurations(device, precisions, runtime_names):
            if precision == "int8" and not runtimes.int8_record(cache, spec):
                continue  # not quantized: run manage.py quantize to time it
            for batch in batches:
                streams = 2 if runtime == "openvino" and threads >= 2 else 1
                detector = Detector(network(), class_names, device=device, precision=precision,
                                    max_batch=batch, runtime=runtime, cache=cache,
                                    streams=streams)
                dev = str(detector.device)
                runners[("pmr", runtime, precision, dev, "pipeline", batch)] = _pmr_pipeline(
                    detector, jpegs)
                runners[("pmr", runtime, precision, dev, "forward", batch)] = _pmr_forward(
                    detector, decoded, len(jpegs))
                stage_runners[(runtime, precision, batch)] = _pmr_stages(detector, jpegs)
                if runtime == "onnxruntime":
                    onnx_file = getattr(detector.backend, "path", None)
        if peers:
            if onnx_file is None and (runtimes.is_installed("onnxruntime")
                                      or runtimes.is_installed("openvino")):
                from .runtimes.export import write_onnx

                onnx_file = Path(tmp) / f"{model}.onnx"
                write_onnx(network(), onnx_file)
            plain: dict[tuple[str, str], tuple] = {
                ("opencv-dnn", "fp32"): (_opencv_forward(_cfg_with_size(Path(cfg), size, Path(tmp)),
                                                         weights, threads),
                                         _postprocess_opencv, lambda images: cv2.dnn.blobFromImages(
                                             images, 1 / 255.0, (size, size), swapRB=False,
                                             crop=False))}
            # The back-ends are imported only where their package is installed.
            if onnx_file is not None and runtimes.is_installed("onnxruntime"):
                from .runtimes import onnxruntime_backend

                plain[("onnxruntime", "fp32")] = (
                    onnxruntime_backend.plain_forward(onnx_file, threads), _postprocess_heads,
                    None)
            if onnx_file is not None and runtimes.is_installed("openvino"):
                from .runtimes import openvino_backend

                plain[("openvino", "fp32")] = (openvino_backend.plain_forward(onnx_file, threads),
                                               _postprocess_heads, None)
                record = runtimes.int8_record(cache, spec)
                if record is not None:
                    int8_file = cache.directory / record["int8_model"]
                    plain[("openvino", "int8")] = (
                        openvino_backend.plain_forward(int8_file, threads), _postprocess_heads,
                        None)
            for (runtime, precision), (forward, post, blob_of) in plain.items():
                for batch in batches:
                    pipeline, forward_only = _plain_runners(forward, post, jpegs, batch, size,
                                                            blob_of)
                    runners[("plain", runtime, precision, "cpu", "pipeline", batch)] = pipeline
                    runners[("plain", runtime, precision, "cpu", "forward", batch)] = forward_only

        for name, run in runners.items():  # warm-up: allocators, kernels, thread pools
            log(f"warming up {model} {' '.join(map(str, name))}")
            run()
        timings: dict[tuple, list[float]] = {name: [] for name in runners}
        stage_times: dict[tuple, list[dict[str, float]]] = {name: [] for name in stage_runners}
        for round_number in range(rounds):
            for name, run in runners.items():
                start = time.perf_counter()
                run()
                timings[name].append((time.perf_counter() - start) / len(jpegs))
            for key, stages in stage_runners.items():
                stage_times[key].append(stages())
            log(f"round {round_number + 1}/{rounds} done")
    weight_kind = "official" if official else "random"
    results = []
    for (entrant, runtime, precision, dev, mode, batch), seconds in timings.items():
        median = statistics.median(seconds)
        share = gflops / median / gemm if gemm and dev == "cpu" else None
        results.append(Measurement(model=model, weights=weight_kind, entrant=entrant,
                                   runtime=runtime, precision=precision, device=dev, mode=mode,
                                   batch=batch, input_size=size, ms_per_image=1000 * median,
                                   images_per_second=1 / median, gemm_share=share,
                                   rounds=rounds))
    per_image = 1000 / len(jpegs)
    stages = [Stages(model, runtime, precision, batch, *(
        per_image * statistics.median(r[stage] for r in stage_times[(runtime, precision, batch)])
        for stage in ("decode", "letterbox", "forward", "postprocess")))
        for runtime, precision, batch in stage_times]
    return results, stages


def comparisons(results: list[Measurement]) -> list[dict]:
    """Each PMR row against the fastest plain loop of its mode and batch, and against the
    plain loop of its own runtime and precision."""
    rows = []
    for r in results:
        if r.entrant != "pmr":
            continue
        peers = [p for p in results if p.entrant == "plain" and p.model == r.model
                 and p.mode == r.mode and p.batch == r.batch]
        if not peers:
            continue
        best = max(peers, key=lambda p: p.images_per_second)
        same = next((p for p in peers if (p.runtime, p.precision) == (r.runtime, r.precision)),
                    None)
        rows.append({
            "model": r.model, "runtime": r.runtime, "precision": r.precision, "mode": r.mode,
            "batch": r.batch, "vs_best_plain": r.images_per_second / best.images_per_second,
            "best_plain": f"{best.runtime} {best.precision}",
            "vs_same_runtime_plain": (r.images_per_second / same.images_per_second
                                      if same else None),
        })
    return rows


def versions() -> dict[str, str]:
    found = {"torch": torch.__version__, "opencv": cv2.__version__}
    for package in ("openvino", "onnxruntime", "nncf"):
        with contextlib.suppress(PackageNotFoundError):
            found[package] = version(package)
    return found


def as_json(results: list[Measurement], stages: list[Stages], *, gemm: float,
            gflops: dict[str, float]) -> dict:
    return {"cpu": cpu_model(), "threads": torch.get_num_threads(),
            "gemm_fp32_gflops": gemm, "model_gflops_per_image": gflops,
            "measurements": [asdict(r) for r in results],
            "comparisons": comparisons(results), "stages": [asdict(s) for s in stages],
            "versions": versions()}


def spec_gflops(spec: NetworkSpec) -> float:
    """GFLOP per image of the network ``spec`` describes (random weights: only shapes)."""
    return network_gflops(Darknet(spec))
