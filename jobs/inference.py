"""The process's detector, loaded once from settings and shared by every caller (in the
workers: the web tier never imports this module, nor PyTorch)."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from django.conf import settings

from engine import MODELS
from engine.batching import DynamicBatcher
from engine.detector import Detector, load_detector, resolve_device
from jobs import catalog, runtime
from jobs.models import DetectorModel

logger = logging.getLogger("pmr.worker")

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
_loading: dict[tuple, threading.Lock] = {}  # one per key: one model loads, others go on


@dataclass(frozen=True)
class Target:
    """The model version a request runs, as a worker finds it: ``key`` names it among
    the loaded ones (a built-in model's name; ``name@version`` for an uploaded one);
    ``record`` is None for a built-in model, whose files are WEIGHTS_DIR's."""

    key: str
    name: str
    record: DetectorModel | None = None

    def load(self, **options) -> Detector:
        if self.record is None:
            options.setdefault("input_size", settings.DETECTOR_INPUT_SIZE or None)
            return load_detector(self.name, settings.WEIGHTS_DIR, **options)
        model = self.record
        paths = catalog.local_files(model)
        size = ((model.input_width, model.input_height) if model.input_size_set
                else settings.DETECTOR_INPUT_SIZE or None)
        options.setdefault("input_size", size)
        return Detector.from_files(paths.cfg, paths.weights, paths.names, **options)


def target(ref: str | None = None) -> Target:
    """What a model reference (``name``, ``name@version``; None: DETECTOR_MODEL) runs
    on a worker: an uploaded model's version is read from the database (a name alone
    is its default version now). FileNotFoundError for a name nobody registered."""
    name, version = catalog.parse_ref(ref or settings.DETECTOR_MODEL)
    if name in MODELS:
        return Target(key=name, name=name)
    versions = DetectorModel.objects.filter(name=name)
    record = (versions.filter(version=version).first() if version is not None
              else versions.filter(is_default=True).first() or versions.first())
    if record is None:
        raise FileNotFoundError(f"model {ref} is not registered here (POST /api/models or "
                                "manage.py add_model)")
    # The files are in the key: a version number used again after a delete is new files.
    key = (f"{record.ref}#{record.weights_sha256[:12]}{record.cfg_sha256[:6]}"
           f"{record.names_sha256[:6]}-{record.input_width}x{record.input_height}")
    return Target(key, name, record)


def get_detector(*, model: str | Target | None = None, device: str | None = None,
                 precision: str | None = None, max_batch: int | None = None,
                 runtime: str | None = None, streams: int = 1) -> Detector:
    """The detector for these options (settings fill in the rest), loaded on first use.
    ``streams``: forward passes at once (OpenVINO); 1 for a caller that runs one pass at
    a time (the commands), ``detector_streams()`` for the batcher. One model loading
    holds back only callers of the same model."""
    chosen = model if isinstance(model, Target) else target(model)
    device = device or settings.DETECTOR_DEVICE
    key = (chosen.key, device, precision or settings.DETECTOR_PRECISION,
           max_batch or detector_max_batch(device), settings.DETECTOR_INPUT_SIZE or None,
           runtime or settings.DETECTOR_RUNTIME, streams)
    with _lock:
        if key in _detectors:
            return _detectors[key]
        loading = _loading.setdefault(key, threading.Lock())
    with loading:
        with _lock:
            if key in _detectors:
                return _detectors[key]
        _, device_, precision_, batch, _, runtime_, streams_ = key
        detector = chosen.load(device=device_, precision=precision_, max_batch=batch,
                               runtime=runtime_, streams=streams_)
        with _lock:
            _detectors[key] = detector
        return detector


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
    """The process's inference thread for a model version (the settings' model by
    default): it loads the model, and every inference of a worker goes through it.
    Prefer ``batcher_for`` (which keeps the batcher from being let go while in use)."""
    return _batcher(target(model))


def _batcher(chosen: Target, *, hold: bool = False) -> DynamicBatcher:
    batchers = runtime.current().batchers
    with _lock:
        if hold:
            _in_use[chosen.key] = _in_use.get(chosen.key, 0) + 1
        batcher = batchers.get(chosen.key)
        if batcher is None or batcher.failed:  # failed: try loading again
            batcher = batchers[chosen.key] = DynamicBatcher(
                lambda: get_detector(model=chosen, streams=detector_streams()),
                max_batch=detector_max_batch(),
                max_wait=settings.DETECTOR_BATCH_WAIT_MS / 1000,
                threads=settings.DETECTOR_THREADS, bulk_slice=video_slice_frames(),
                bulk_every=settings.IMAGE_BATCHES_PER_VIDEO_SLICE,
                name=f"pmr-inference-{chosen.key}")
        _last_used[chosen.key] = time.monotonic()
        evicted = _evict_over_limit(batchers, keep=chosen.key)
    for old in evicted:
        old.close()
    return batcher


_last_used: dict[str, float] = {}
_in_use: dict[str, int] = {}


@contextlib.contextmanager
def batcher_for(model: str | None = None) -> Iterator[DynamicBatcher]:
    """The model's batcher, held: while the block runs it is not let go to make room
    for another model (MAX_LOADED_MODELS)."""
    chosen = target(model)
    key = chosen.key
    batcher = _batcher(chosen, hold=True)
    try:
        yield batcher
    finally:
        with _lock:
            _in_use[key] -= 1
            _last_used[key] = time.monotonic()


def _evict_over_limit(batchers: dict, *, keep: str) -> list[DynamicBatcher]:
    """Past MAX_LOADED_MODELS, let go of the models used longest ago that no task holds
    (under _lock; the caller closes them). A built-in DETECTOR_MODEL stays."""
    evicted = []
    default = settings.DETECTOR_MODEL
    while len(batchers) > settings.MAX_LOADED_MODELS:
        idle = [key for key in batchers
                if key not in (keep, default) and not _in_use.get(key)]
        if not idle:
            break  # all in use: over the limit until one is free
        oldest = min(idle, key=lambda key: _last_used.get(key, 0.0))
        evicted.append(batchers.pop(oldest))
        for key in [k for k in _detectors if k[0] == oldest]:
            del _detectors[key]
        logger.info("model %s let go (MAX_LOADED_MODELS=%d)", oldest,
                    settings.MAX_LOADED_MODELS)
    return evicted


def weights_sha256(detector: Detector) -> str:
    """sha256 of the weights a detector was loaded from (hashed once per process)."""
    cache = getattr(detector, "cache", None)
    return cache.weights_sha256 if cache is not None else ""


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
