"""The inference thread: one per model and worker process, with dynamic batching.

Like Triton's dynamic batcher, with a maximum batch size and a maximum queue delay:
the inference thread takes the oldest request, then whatever else arrives within
``max_wait`` seconds, up to ``max_batch`` images, and runs them as one batch. A lone
request waits at most ``max_wait``; under load, batches fill while the previous one
runs, so there is no waiting at all. (celery-batches flushes on a timer instead, which
makes every lone request wait out the whole interval.) A video task hands over a whole
batch of frames as one request.

Image requests come first. A video's frames are submitted as "bulk" work: they never
share a forward pass with image requests, and a bulk request runs in slices of
``bulk_slice`` frames, with whatever image requests arrived in the meantime run between
two slices. So while a video is processed, an image waits for at most one slice of
video frames, not for a whole batch or for the video. Slices are cut the same way
whatever else is queued, so a video's results do not depend on the image traffic.

First is not always: under a stream of image requests that never lets up, a video
would get no forward pass at all. So while bulk work waits, at most ``bulk_every``
image batches run in a row, then one slice of it. The guarantees, for one inference
thread: an image request waits for at most the forward pass running when it arrives
plus ``bulk_every`` image batches ahead of it, and one video slice; and waiting video
frames get at least one slice in every ``bulk_every + 1`` forward passes.

**Passes at once.** Where the detector can run several forward passes at once
(``Detector.parallel_passes``: OpenVINO with streams, in THROUGHPUT mode), the thread
keeps that many under way: it pre-processes and starts the next batch while the
previous one runs, and post-processes a batch while the next one runs, so that the
cores never wait for Python. Batches are formed and ordered by the same rules (image
requests first, the same slices, ``bulk_every``), each pass at most the detector's
``max_batch`` images; results come back in the order the passes were started. An image
request then waits for the passes under way when it arrives (up to ``parallel_passes``
of them, running side by side) plus ``bulk_every`` image batches ahead of it and one
video slice, as before; a pass that fails is handled as one run alone would be.

The thread also loads the model and warms it up, so that it is the only thread of the
process that runs PyTorch's CPU kernels. That matters for speed: OpenMP keeps a team of
threads for every thread that ever ran a parallel kernel, and as soon as a process holds
more OpenMP threads than there are cores, idle team members stop spinning between
kernels and must be woken for each one. On a 2-core machine a second team (the worker's
main thread, having loaded the model) made every inference about a third slower.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np
import torch

from engine import Detection
from engine.detector import DetectOptions, Detector, PendingDetections

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchResult:
    detections: list[Detection]
    inference_ms: float  # time of the forward pass (and NMS) this image was part of
    batch_size: int


@dataclass
class _Request:
    images: list[np.ndarray]
    options: list[DetectOptions]
    future: Future  # -> list[BatchResult], one per image
    done: list[BatchResult] = field(default_factory=list)  # bulk: the slices run so far
    started: int = 0  # bulk: frames handed to forward passes so far


@dataclass
class _Pass:
    """A forward pass under way: an image batch, or one slice of a bulk request."""

    pending: PendingDetections
    began: float
    size: int
    batch: list[_Request] = field(default_factory=list)  # image requests
    bulk: _Request | None = None


class DynamicBatcher:
    def __init__(self, load: Callable[[], Detector], *, max_batch: int, max_wait: float,
                 threads: int = 0, bulk_slice: int = 0, bulk_every: int = 3,
                 name: str = "pmr-inference") -> None:
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.bulk_slice = bulk_slice  # frames per forward pass of bulk work (0: all at once)
        self.bulk_every = max(1, bulk_every)  # image batches in a row while bulk work waits
        self._urgent_in_a_row = 0
        self._load = load
        self._threads = threads
        self._loaded: Future = Future()
        self.num_threads = 0  # CPU threads the inference thread runs kernels on
        self._ready = threading.Condition()
        self._urgent: deque[_Request] = deque()
        self._bulk: deque[_Request] = deque()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def detector(self, timeout: float | None = None) -> Detector:
        """The loaded detector (waits for the thread to load it; raises what loading
        raised, e.g. FileNotFoundError for missing weights)."""
        return self._loaded.result(timeout)

    def submit(self, image: np.ndarray, options: DetectOptions) -> Future:
        """One image; the future's result is its BatchResult."""
        whole = self.submit_many([image], [options])
        single: Future = Future()

        def done(future: Future) -> None:
            if future.exception() is not None:
                single.set_exception(future.exception())
            else:
                single.set_result(future.result()[0])

        whole.add_done_callback(done)
        return single

    def submit_many(self, images: list[np.ndarray], options: list[DetectOptions], *,
                    bulk: bool = False) -> Future:
        """Several images, run together; the future's result is a list of BatchResult in
        the same order. ``bulk`` (a video's frames): run after the image requests
        waiting, in slices (see the module's doc)."""
        future: Future = Future()
        if not images:
            future.set_result([])
            return future
        with self._ready:
            if self._closing:
                future.set_exception(RuntimeError("the inference thread stopped"))
                return future
            (self._bulk if bulk else self._urgent).append(
                _Request(list(images), list(options), future))
            self._ready.notify()
        if self.failed:
            self._fail_waiting(self._loaded.exception())
        return future

    def close(self, timeout: float = 30) -> None:
        """Stop the thread once its forward pass in progress ends; requests still waiting
        fail. (A process that exits while this thread is inside a kernel is aborted by
        the C++ runtime: processes close their batchers at exit.)"""
        with self._ready:
            self._closing = True
            self._ready.notify_all()
        self._fail_waiting(RuntimeError("the inference thread stopped"))
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def loaded(self) -> bool:
        """Loading ended (the model is loaded, or could not be: ``failed``)."""
        return self._loaded.done()

    @property
    def failed(self) -> bool:
        """The model could not be loaded (the thread has stopped)."""
        return self._loaded.done() and self._loaded.exception() is not None

    def _fail_waiting(self, exc: BaseException) -> None:
        with self._ready:
            waiting = [*self._urgent, *self._bulk]
            self._urgent.clear()
            self._bulk.clear()
        for request in waiting:
            request.future.set_exception(exc)

    def _run(self) -> None:
        if self._threads:
            torch.set_num_threads(self._threads)
        try:
            detector = self._load()
        except BaseException as exc:
            self._loaded.set_exception(exc)
            self._fail_waiting(exc)  # and submit_many fails those that come later
            return
        self.num_threads = torch.get_num_threads()
        self._loaded.set_result(detector)
        # A stand-in detector (tests) may not say: one pass at a time.
        if getattr(detector, "parallel_passes", 1) > 1:
            self._run_overlapped(detector, detector.parallel_passes)
            return
        while True:
            urgent, bulk = self._collect()
            if self._closing:
                return
            if urgent:
                self._run_batch(detector, urgent)
            else:
                self._run_slice(detector, bulk)

    def _collect(self, *, wait: bool = True, max_batch: int | None = None
                 ) -> tuple[list[_Request], _Request | None]:
        """The next work: image requests (as many as fit a batch), else one bulk request;
        bulk work's turn after ``bulk_every`` image batches in a row. ``wait=False``:
        nothing (([], None)) rather than waiting for work, nor for ``max_wait``."""
        max_batch = max_batch or self.max_batch
        with self._ready:
            while not self._urgent and not self._bulk and not self._closing:
                if not wait:
                    return [], None
                self._ready.wait()
            if self._closing:
                return [], None
            if not self._urgent or (self._bulk and self._urgent_in_a_row >= self.bulk_every):
                self._urgent_in_a_row = 0
                return [], self._bulk[0]
            if self._bulk:
                self._urgent_in_a_row += 1
            batch, count = [], 0
            deadline = time.monotonic() + (self.max_wait if wait else 0)
            while True:
                while self._urgent and (not batch or count + len(self._urgent[0].images)
                                        <= max_batch):
                    request = self._urgent.popleft()  # one that would overflow starts the next
                    batch.append(request)
                    count += len(request.images)
                remaining = deadline - time.monotonic()
                if count >= max_batch or self._urgent or remaining <= 0:
                    return batch, None
                self._ready.wait(remaining)

    def _run_slice(self, detector: Detector, request: _Request) -> None:
        """The next slice of the bulk request at the head of the line."""
        start = len(request.done)
        size = self.bulk_slice or len(request.images)
        images, options = request.images[start:start + size], request.options[start:start + size]
        began = time.perf_counter()
        try:
            found = detector.detect_each(images, options)
        except Exception as exc:
            logger.exception("inference on %d video frame(s) failed", len(images))
            self._pop_bulk()
            request.future.set_exception(exc)
            return
        elapsed_ms = 1000 * (time.perf_counter() - began)
        request.done.extend(BatchResult(detections, elapsed_ms, len(images))
                            for detections in found)
        if len(request.done) == len(request.images):
            self._pop_bulk()
            request.future.set_result(request.done)

    def _pop_bulk(self) -> None:
        with self._ready:
            self._bulk.popleft()

    def _drop_bulk(self, request: _Request) -> None:
        with self._ready:
            if request in self._bulk:
                self._bulk.remove(request)

    # --- several passes at once -----------------------------------------------------------

    def _run_overlapped(self, detector: Detector, depth: int) -> None:
        """The loop of ``_run`` with up to ``depth`` forward passes under way: start work
        while a pass is free, else finish the oldest pass."""
        in_flight: deque[_Pass] = deque()
        while True:
            # With passes under way, take only what is queued now: the cores are busy.
            urgent, bulk = self._collect(wait=not in_flight,
                                         max_batch=min(self.max_batch, detector.max_batch))
            if self._closing:
                break
            if urgent or bulk is not None:
                started = self._start(detector, urgent, bulk)
                if started is not None:
                    in_flight.append(started)
                if len(in_flight) < depth:
                    continue
            if in_flight:
                self._finish(detector, in_flight.popleft())
        while in_flight:  # closing: what runs already still gets its answer
            self._finish(detector, in_flight.popleft())

    def _start(self, detector: Detector, urgent: list[_Request],
               bulk: _Request | None) -> _Pass | None:
        """Pre-process and start one forward pass (None: it failed to start, and what it
        carried has been answered)."""
        began = time.perf_counter()
        if urgent:
            images = [image for request in urgent for image in request.images]
            options = [option for request in urgent for option in request.options]
            try:
                pending = detector.start_each(images, options)
            except Exception as exc:
                self._urgent_failed(detector, urgent, exc)
                return None
            return _Pass(pending, began, len(images), batch=urgent)
        assert bulk is not None
        start = bulk.started
        size = min(self.bulk_slice or len(bulk.images), detector.max_batch)
        images, options = bulk.images[start:start + size], bulk.options[start:start + size]
        bulk.started += len(images)
        if bulk.started == len(bulk.images):
            self._pop_bulk()  # every frame handed out: the next bulk request is next
        try:
            pending = detector.start_each(images, options)
        except Exception as exc:
            self._bulk_failed(bulk, len(images), exc)
            return None
        return _Pass(pending, began, len(images), bulk=bulk)

    def _finish(self, detector: Detector, running: _Pass) -> None:
        """Wait for a pass, post-process it and answer what it carried."""
        try:
            found = running.pending.result()
        except Exception as exc:
            if running.bulk is not None:
                self._bulk_failed(running.bulk, running.size, exc)
            else:
                self._urgent_failed(detector, running.batch, exc)
            return
        elapsed_ms = 1000 * (time.perf_counter() - running.began)
        if running.bulk is not None:
            request = running.bulk
            if request.future.done():  # an earlier slice failed, or the thread closed
                return
            request.done.extend(BatchResult(detections, elapsed_ms, running.size)
                                for detections in found)
            if len(request.done) == len(request.images):
                request.future.set_result(request.done)
            return
        results = iter(found)
        for each in running.batch:
            each.future.set_result([BatchResult(next(results), elapsed_ms, running.size)
                                    for _ in each.images])

    def _urgent_failed(self, detector: Detector, batch: list[_Request],
                       exc: Exception) -> None:
        if len(batch) > 1:  # one request's failure is not the others': run each alone
            logger.warning("batch of %d requests failed (%s): running them one by one",
                           len(batch), exc)
            for request in batch:
                self._run_batch(detector, [request])
            return
        logger.error("inference on %d image(s) failed", len(batch[0].images), exc_info=exc)
        batch[0].future.set_exception(exc)

    def _bulk_failed(self, request: _Request, frames: int, exc: Exception) -> None:
        logger.error("inference on %d video frame(s) failed", frames, exc_info=exc)
        self._drop_bulk(request)
        if not request.future.done():
            request.future.set_exception(exc)

    def _run_batch(self, detector: Detector, batch: list[_Request]) -> None:
        images = [image for request in batch for image in request.images]
        options = [option for request in batch for option in request.options]
        start = time.perf_counter()
        try:
            found = detector.detect_each(images, options)
        except Exception as exc:
            self._urgent_failed(detector, batch, exc)
            return
        elapsed_ms = 1000 * (time.perf_counter() - start)
        results = iter(found)
        for request in batch:
            request.future.set_result([BatchResult(next(results), elapsed_ms, len(images))
                                       for _ in request.images])
