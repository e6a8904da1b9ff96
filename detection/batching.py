"""The inference thread: one per model and worker process, with dynamic batching.

Like Triton's dynamic batcher, with a maximum batch size and a maximum queue delay:
the inference thread takes the oldest request, then whatever else arrives within
``max_wait`` seconds, up to ``max_batch`` images, and runs them as one batch. A lone
request waits at most ``max_wait``; under load, batches fill while the previous one
runs, so there is no waiting at all. (celery-batches flushes on a timer instead, which
makes every lone request wait out the whole interval.) A video task hands over a whole
batch of frames as one request.

The thread also loads the model and warms it up, so that it is the only thread of the
process that runs PyTorch's CPU kernels. That matters for speed: OpenMP keeps a team of
threads for every thread that ever ran a parallel kernel, and as soon as a process holds
more OpenMP threads than there are cores, idle team members stop spinning between
kernels and must be woken for each one. On a 2-core machine a second team (the worker's
main thread, having loaded the model) made every inference about a third slower.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
import torch

from detection.engine import Detection, Detector
from detection.engine.detector import DetectOptions

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


class DynamicBatcher:
    def __init__(self, load: Callable[[], Detector], *, max_batch: int, max_wait: float,
                 threads: int = 0, name: str = "pmr-inference") -> None:
        self.max_batch = max_batch
        self.max_wait = max_wait
        self._load = load
        self._threads = threads
        self._loaded: Future = Future()
        self.num_threads = 0  # CPU threads the inference thread runs kernels on
        self._queue: queue.Queue[_Request] = queue.Queue()
        self._held: _Request | None = None
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

    def submit_many(self, images: list[np.ndarray], options: list[DetectOptions]) -> Future:
        """Several images (a video's frames), run together; the future's result is a
        list of BatchResult in the same order."""
        future: Future = Future()
        self._queue.put(_Request(list(images), list(options), future))
        if self.failed:
            self._fail_waiting()
        return future

    @property
    def failed(self) -> bool:
        """The model could not be loaded (the thread has stopped)."""
        return self._loaded.done() and self._loaded.exception() is not None

    def _fail_waiting(self) -> None:
        while True:
            try:
                request = self._queue.get_nowait()
            except queue.Empty:
                return
            request.future.set_exception(self._loaded.exception())

    def _run(self) -> None:
        if self._threads:
            torch.set_num_threads(self._threads)
        try:
            detector = self._load()
        except BaseException as exc:
            self._loaded.set_exception(exc)
            self._fail_waiting()  # and submit_many fails those that come later
            return
        self.num_threads = torch.get_num_threads()
        self._loaded.set_result(detector)
        while True:
            self._run_batch(detector, self._collect())

    def _collect(self) -> list[_Request]:
        first = self._held or self._queue.get()
        self._held = None
        batch, count = [first], len(first.images)
        deadline = time.monotonic() + self.max_wait
        while count < self.max_batch:
            try:
                request = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    request = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if count + len(request.images) > self.max_batch:
                self._held = request  # it starts the next batch
                break
            batch.append(request)
            count += len(request.images)
        return batch

    def _run_batch(self, detector: Detector, batch: list[_Request]) -> None:
        images = [image for request in batch for image in request.images]
        options = [option for request in batch for option in request.options]
        start = time.perf_counter()
        try:
            found = detector.detect_each(images, options)
        except Exception as exc:
            if len(batch) > 1:  # one request's failure is not the others': run each alone
                logger.warning("batch of %d requests failed (%s): running them one by one",
                               len(batch), exc)
                for request in batch:
                    self._run_batch(detector, [request])
                return
            logger.exception("inference on %d image(s) failed", len(images))
            batch[0].future.set_exception(exc)
            return
        elapsed_ms = 1000 * (time.perf_counter() - start)
        results = iter(found)
        for request in batch:
            request.future.set_result([BatchResult(next(results), elapsed_ms, len(images))
                                       for _ in request.images])
