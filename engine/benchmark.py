"""Throughput of this engine against OpenCV DNN, measured side by side in one run.

Both sides get the same decoded RGB images and return detections: for this engine,
``Detector.detect`` (letterbox, forward, decode, NMS); for OpenCV DNN,
``blobFromImages`` + ``Net.forward`` + decode + ``NMSBoxes`` per class — what a user of
``cv2.dnn.readNetFromDarknet`` would write. Each configuration is timed in
interleaved rounds (A B C A B C ...) so that a noisy, shared machine slows all of them
alike; the figures are medians over rounds, and ratios are ratios of medians.
"""

from __future__ import annotations

import re
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from .cfg import parse_cfg
from .detector import Detector, read_names
from .model import Darknet
from .weights import random_darknet_weights, read_darknet_weights, write_darknet_weights


@dataclass
class Measurement:
    model: str
    weights: str  # "official" or "random"
    runtime: str  # "pmr" or "opencv-dnn"
    device: str
    precision: str
    batch: int
    input_size: int
    ms_per_image: float
    images_per_second: float
    rounds: int


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


def _opencv_runner(cfg: Path, weights: Path, images: list[np.ndarray], batch: int,
                   size: int) -> Callable[[], None]:
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    outputs = net.getUnconnectedOutLayersNames()

    def run() -> None:
        for start in range(0, len(images), batch):
            chunk = images[start:start + batch]
            # The images are RGB already, as darknet wants: no channel swap.
            blob = cv2.dnn.blobFromImages(chunk, 1 / 255.0, (size, size), swapRB=False,
                                          crop=False)
            net.setInput(blob)
            heads = net.forward(outputs)
            for index, image in enumerate(chunk):
                _opencv_postprocess([h[index] if h.ndim == 3 else h for h in heads], image)

    return run


def _opencv_postprocess(heads: list[np.ndarray], image: np.ndarray) -> list:
    """Decode OpenCV's region output rows [cx, cy, w, h, obj, class scores...] + NMS."""
    height, width = image.shape[:2]
    rows = np.concatenate(heads, axis=0)
    scores = rows[:, 5:]
    found = []
    for class_id in np.nonzero((scores > 0.25).any(axis=0))[0]:
        keep = scores[:, class_id] > 0.25
        boxes = rows[keep, :4] * [width, height, width, height]
        boxes[:, :2] -= boxes[:, 2:] / 2
        picked = cv2.dnn.NMSBoxes(boxes.tolist(), scores[keep, class_id].tolist(), 0.25, 0.45)
        found.extend((class_id, boxes[i]) for i in np.asarray(picked).reshape(-1))
    return found


def _pmr_runner(detector: Detector, images: list[np.ndarray]) -> Callable[[], None]:
    def run() -> None:
        detector.detect(images)
        if detector.device.type == "cuda":
            torch.cuda.synchronize(detector.device)

    return run


def run_benchmark(*, model: str, cfg: Path, weights: Path | None, names: Path | None,
                  images: list[np.ndarray], batches: tuple[int, ...], precisions: tuple[str, ...],
                  device: str, rounds: int, opencv: bool,
                  input_size: int | None = None,
                  log: Callable[[str], None] = print) -> list[Measurement]:
    """Time each configuration over ``rounds`` interleaved rounds of all ``images``."""
    spec = parse_cfg(cfg, input_size)
    size = spec.width
    with tempfile.TemporaryDirectory() as tmp:
        if weights is None:
            weights = Path(tmp) / f"{model}-random.weights"
            write_darknet_weights(weights, spec,
                                  random_darknet_weights(spec, seed=0, objectness_bias=-6.0))
        _, blocks = read_darknet_weights(weights, spec)
        class_names = read_names(names) if names else [f"class{i}" for i in range(spec.classes)]
        runners: dict[tuple, Callable[[], None]] = {}
        for precision in precisions:
            for batch in batches:
                network = Darknet(spec)
                network.load_weights(blocks)
                # PyTorch's runtime: the other runtimes join the benchmark in a later step.
                detector = Detector(network, class_names, device=device, precision=precision,
                                    max_batch=batch, runtime="torch")
                key = ("pmr", str(detector.device), detector.precision, batch)
                runners[key] = _pmr_runner(detector, images)
        if opencv:
            opencv_cfg = _cfg_with_size(Path(cfg), size, Path(tmp))
            for batch in batches:
                runners[("opencv-dnn", "cpu", "fp32", batch)] = _opencv_runner(
                    opencv_cfg, weights, images, batch, size)

        for name, run in runners.items():  # warm-up: allocators, kernels, thread pools
            log(f"warming up {model} {' '.join(map(str, name))}")
            run()
        timings: dict[tuple, list[float]] = {name: [] for name in runners}
        for round_number in range(rounds):
            for name, run in runners.items():
                start = time.perf_counter()
                run()
                timings[name].append((time.perf_counter() - start) / len(images))
            log(f"round {round_number + 1}/{rounds} done")
    weight_kind = "random" if "random" in Path(weights).name else "official"
    results = []
    for (runtime, dev, precision, batch), seconds in timings.items():
        median = statistics.median(seconds)
        results.append(Measurement(model=model, weights=weight_kind, runtime=runtime,
                                   device=dev, precision=precision, batch=batch,
                                   input_size=size, ms_per_image=1000 * median,
                                   images_per_second=1 / median, rounds=rounds))
    return results


def speedups(results: list[Measurement]) -> list[dict]:
    """Each engine row against OpenCV DNN at the same batch and against its best batch."""
    rows = []
    for model in dict.fromkeys(r.model for r in results):
        mine = [r for r in results if r.model == model]
        reference = {r.batch: r for r in mine if r.runtime == "opencv-dnn"}
        if not reference:
            continue
        best = max(reference.values(), key=lambda r: r.images_per_second)
        for r in mine:
            if r.runtime != "pmr":
                continue
            same = reference.get(r.batch)
            rows.append({
                "model": model, "device": r.device, "precision": r.precision, "batch": r.batch,
                "vs_opencv_same_batch": (r.images_per_second / same.images_per_second
                                         if same else None),
                "vs_opencv_best": r.images_per_second / best.images_per_second,
            })
    return rows


def as_json(results: list[Measurement]) -> dict:
    return {"measurements": [asdict(r) for r in results], "speedups": speedups(results),
            "torch": torch.__version__, "opencv": cv2.__version__,
            "threads": torch.get_num_threads()}
