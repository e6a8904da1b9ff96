"""A Celery worker's start and stop: load the model once, warm it up, then run the
process's ``WorkerRuntime`` (heartbeat, leases, watchdog) with the apps' watchdog checks.

Imported by workers only: the Celery app lists this module in its ``imports``, which a
worker imports at start, before Celery sends worker_init.
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np
from celery.signals import worker_init, worker_shutdown
from django.conf import settings
from django.db import connections

from images.services import requeue_stalled_images
from jobs import runtime
from jobs.inference import get_batcher, weights_sha256
from videos.runner import parts_limit
from videos.services import requeue_stalled

logger = logging.getLogger("pmr.worker")


def pool_fit_threads(threads: int) -> int | None:
    """Make the PostgreSQL connection pool hold a connection for every task thread, the
    heartbeat, the watchdog and one spare: a task keeps its thread's connection while it
    waits for the batcher, so a pool smaller than the threads makes busy tasks time out
    waiting for a connection. Returns the pool's size (None: no pool)."""
    pool = settings.DATABASES["default"].get("OPTIONS", {}).get("pool")
    if not isinstance(pool, dict):
        return None
    need = threads + 3
    if pool.get("max_size", 0) < need:
        pool["max_size"] = need
        connection = connections["default"]
        made = getattr(connection, "_connection_pools", {})
        if connection.alias in made and connection.settings_dict["OPTIONS"].get("pool") is pool:
            connection.close_pool()  # made before: made again, at its new size
    return pool["max_size"]


def seconds_since_process_start() -> float | None:
    """How long this process has run (Linux's /proc; None elsewhere)."""
    try:
        with open("/proc/self/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime", encoding="ascii") as uptime:
            up = float(uptime.read().split()[0])
        return up - int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime
    except (OSError, ValueError, IndexError):
        return None


def _requeued_images() -> list[str]:
    return [f"image job {pk} lost its worker" for pk in requeue_stalled_images()]


@worker_init.connect
def start(sender=None, **kwargs) -> None:
    if settings.WORKER_NICE:
        os.nice(settings.WORKER_NICE)
    # The model is loaded, warmed up and run by the batcher's inference thread only
    # (see engine.batching): this thread runs no PyTorch kernel.
    began = time.perf_counter()
    batcher = get_batcher()
    detector = batcher.detector()
    blank = np.zeros((480, 640, 3), dtype=np.uint8)
    for _ in range(2):  # the first passes allocate buffers and pick kernels
        count = min(2, detector.max_batch)
        # One request per pass at once, so that every stream is warmed up.
        waiting = [batcher.submit_many([blank] * count, [detector.options()] * count)
                   for _ in range(detector.parallel_passes)]
        for each in waiting:
            each.result()
    logger.info("model %s (sha256 %s) on %s, %s, %s, max batch %d, %d pass(es) at once, "
                "input %dx%d, %d threads, nice %d", settings.DETECTOR_MODEL,
                weights_sha256(detector)[:12], detector.device,
                detector.runtime, detector.precision, detector.max_batch,
                detector.parallel_passes, *detector.input_size, batcher.num_threads,
                os.nice(0))
    up = seconds_since_process_start()
    logger.info("%s start: model loaded and warmed up in %.1f s%s (%s)",
                "warm" if detector.backend.warm_start else "cold",
                time.perf_counter() - began,
                f", {up:.1f} s since the process started" if up is not None else "",
                "read from the export cache" if detector.backend.warm_start
                else "exported or compiled, and kept for the next start")
    # The queues this worker consumes (-Q), not every queue the app knows of.
    queues = ",".join(sorted(sender.app.amqp.queues.consume_from)) if sender else ""
    threads = getattr(sender, "concurrency", None)  # --concurrency, else the setting
    if not isinstance(threads, int) or threads < 1:
        threads = settings.CELERY_WORKER_CONCURRENCY
    me = runtime.install(runtime.WorkerRuntime(
        identity=runtime.Identity(
            hostname=getattr(sender, "hostname", None) or f"worker@{os.uname().nodename}",
            device=str(detector.device), precision=detector.precision, queues=queues,
            threads=threads,
            takes_images=not sender or settings.IMAGE_QUEUE in queues.split(",")),
        watchdog_checks=[requeue_stalled, _requeued_images]))
    logger.info("queues %s; video parts at once: %d", queues or "(all)", parts_limit())
    pool_fit_threads(threads)
    me.start()


@worker_shutdown.connect
def stop(**kwargs) -> None:
    runtime.current().stop()
