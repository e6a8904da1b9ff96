"""The process's detector, loaded once from settings and shared by every caller (in the
workers: the web tier never imports this module, nor PyTorch)."""

from __future__ import annotations

import atexit
import os
import threading

from django.conf import settings

from engine.batching import DynamicBatcher
from engine.detector import Detector, load_detector, resolve_device
from jobs import runtime

# On the CPUs measured a forward pass costs no more per image at batch 2 than at 8 (the
# README's figures): slices of 2 frames keep an image's wait behind a video short at no
# cost in throughput.
CPU_VIDEO_SLICE_FRAMES = 2
# Images per forward pass when DETECTOR_MAX_BATCH is 0 (auto). On the CPUs measured, a
# batch of 8 costs 20-30% more per image than a batch of 4 (its activations no longer fit
# the caches); on a GPU a larger batch costs little more than one image.
CPU_MAX_BATCH = 4
GPU_MAX_BATCH = 8

_lock = threading.Lock()
_detectors: dict[tuple, Detector] = {}  # a cache: what is loaded from these options


def get_detector(*, model: str | None = None, device: str | None = None,
                 precision: str | None = None, max_batch: int | None = None,
                 runtime: str | None = None, streams: int = 1) -> Detector:
    """The detector for these options (settings fill in the rest), loaded on first use.
    ``streams``: forward passes at once (OpenVINO); 1 for a caller that runs one pass at
    a time (the commands), ``detector_streams()`` for the batcher."""
    device = device or settings.DETECTOR_DEVICE
    key = (model or settings.DETECTOR_MODEL, device,
           precision or settings.DETECTOR_PRECISION, max_batch or detector_max_batch(device),
           settings.DETECTOR_INPUT_SIZE or None, runtime or settings.DETECTOR_RUNTIME, streams)
    with _lock:
        if key not in _detectors:
            name, device_, precision_, batch, size, runtime_, streams_ = key
            _detectors[key] = load_detector(name, settings.WEIGHTS_DIR, device=device_,
                                            precision=precision_, max_batch=batch,
                                            input_size=size, runtime=runtime_,
                                            streams=streams_)
        return _detectors[key]


def _on_cuda(device: str | None) -> bool:
    return resolve_device(device or settings.DETECTOR_DEVICE).type == "cuda"


def detector_max_batch(device: str | None = None) -> int:
    """Images per forward pass on this device: DETECTOR_MAX_BATCH, or if 0 the default for
    the device's kind."""
    if settings.DETECTOR_MAX_BATCH:
        return settings.DETECTOR_MAX_BATCH
    return GPU_MAX_BATCH if _on_cuda(device) else CPU_MAX_BATCH


def detector_streams(device: str | None = None) -> int:
    """Forward passes a worker keeps under way at once: DETECTOR_STREAMS, or if 0 two on a
    CPU with two threads or more (OpenVINO's THROUGHPUT mode: one pass computes while the
    inference thread pre- and post-processes the other; the runtimes without streams run
    one at a time whatever this says), one on a GPU."""
    if settings.DETECTOR_STREAMS:
        return settings.DETECTOR_STREAMS
    if _on_cuda(device):
        return 1
    threads = settings.DETECTOR_THREADS or os.cpu_count() or 1
    return 2 if threads >= 2 else 1


def get_batcher(model: str | None = None) -> DynamicBatcher:
    """The process's inference thread for a model (the settings' model by default): it
    loads the model, and every inference of a worker goes through it."""
    name = model or settings.DETECTOR_MODEL
    batchers = runtime.current().batchers
    with _lock:
        if name not in batchers or batchers[name].failed:  # failed: try loading again
            batchers[name] = DynamicBatcher(
                lambda: get_detector(model=name, streams=detector_streams()),
                max_batch=detector_max_batch(),
                max_wait=settings.DETECTOR_BATCH_WAIT_MS / 1000,
                threads=settings.DETECTOR_THREADS, bulk_slice=video_slice_frames(),
                bulk_every=settings.IMAGE_BATCHES_PER_VIDEO_SLICE,
                name=f"pmr-inference-{name}")
        return batchers[name]


@atexit.register
def close_batchers() -> None:
    """At exit: let each inference thread finish its forward pass (an exit in the middle
    of one is an abort, not a clean stop)."""
    held = runtime.current().batchers
    with _lock:
        batchers = list(held.values())
        held.clear()
    for batcher in batchers:
        batcher.close()


def video_slice_frames(device: str | None = None) -> int:
    """Video frames per forward pass between image requests (see VIDEO_SLICE_FRAMES); 0 is
    the whole batch."""
    if settings.VIDEO_SLICE_FRAMES:
        return settings.VIDEO_SLICE_FRAMES
    return 0 if _on_cuda(device) else CPU_VIDEO_SLICE_FRAMES
