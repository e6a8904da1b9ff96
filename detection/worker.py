"""Celery worker start-up: load the model once, warm it up, report in, keep reporting.

Imported by ``detection.tasks`` (so by workers only, once the apps are loaded), which
connects these handlers before Celery sends worker_init.
"""

from __future__ import annotations

import logging
import os
import threading
import time

import numpy as np
from celery.signals import worker_init, worker_shutdown
from django.conf import settings
from django.db import close_old_connections, connections
from django.utils import timezone

from detection import leases
from detection.catalog import weights_sha256
from detection.inference import get_batcher
from detection.models import WorkerHeartbeat
from detection.services import requeue_stalled_images
from videos.runner import parts_limit, parts_limit_set
from videos.services import requeue_stalled

logger = logging.getLogger("pmr.worker")
_stop = threading.Event()
_state: dict = {}


def _beat(hostname: str, detector, queues: str, started) -> None:
    """Report in and renew the leases of the work in hand (image jobs, video parts) every
    WORKER_HEARTBEAT_SECONDS; requeue dead workers' jobs, and stalled video parts, every
    WATCHDOG_SECONDS (any live worker may: requeueing is atomic per job)."""

    next_watch = 0.0
    while True:
        try:
            close_old_connections()
            WorkerHeartbeat.objects.update_or_create(hostname=hostname, defaults={
                "pid": os.getpid(), "device": str(detector.device), "queues": queues,
                "model_name": settings.DETECTOR_MODEL, "precision": detector.precision,
                "started_at": started, "last_seen": timezone.now()})
            leases.renew_all()  # the image jobs and video parts this process holds
            if time.monotonic() >= next_watch:
                next_watch = time.monotonic() + settings.WATCHDOG_SECONDS
                for what in requeue_stalled():  # says why: the worker died, or stalled
                    logger.warning("%s: requeued", what)
                for job_id in requeue_stalled_images():
                    logger.warning("image job %s lost its worker: requeued", job_id)
        except Exception:
            logger.warning("heartbeat failed", exc_info=True)  # the database may be down
        if _stop.wait(settings.WORKER_HEARTBEAT_SECONDS):
            return


def pool_fit_threads(threads: int) -> int | None:
    """Make the PostgreSQL connection pool hold a connection for every task thread, the
    heartbeat and one spare: a task keeps its thread's connection while it waits for the
    batcher, so a pool smaller than the threads makes busy tasks time out waiting for a
    connection. Returns the pool's size (None: no pool)."""
    pool = settings.DATABASES["default"].get("OPTIONS", {}).get("pool")
    if not isinstance(pool, dict):
        return None
    need = threads + 2
    if pool.get("max_size", 0) < need:
        pool["max_size"] = need
        connection = connections["default"]
        made = getattr(connection, "_connection_pools", {})
        if connection.alias in made and connection.settings_dict["OPTIONS"].get("pool") is pool:
            connection.close_pool()  # made before: made again, at its new size
    return pool["max_size"]


@worker_init.connect
def load_model(sender=None, **kwargs) -> None:

    if settings.WORKER_NICE:
        os.nice(settings.WORKER_NICE)
    # The model is loaded, warmed up and run by the batcher's inference thread only
    # (see detection.batching): this thread runs no PyTorch kernel.
    batcher = get_batcher()
    detector = batcher.detector()
    blank = np.zeros((480, 640, 3), dtype=np.uint8)
    for _ in range(2):  # the first passes allocate buffers and pick kernels
        count = min(2, detector.max_batch)
        batcher.submit_many([blank] * count, [detector.options()] * count).result()
    logger.info("model %s (sha256 %s) on %s, %s, max batch %d, input %dx%d, %d threads, "
                "nice %d", settings.DETECTOR_MODEL, weights_sha256(settings.DETECTOR_MODEL)[:12],
                detector.device, detector.precision, detector.max_batch, *detector.input_size,
                batcher.num_threads, os.nice(0))
    hostname = getattr(sender, "hostname", None) or f"worker@{os.uname().nodename}"
    # The queues this worker consumes (-Q), not every queue the app knows of.
    queues = ",".join(sorted(sender.app.amqp.queues.consume_from)) if sender else ""
    threads = getattr(sender, "concurrency", None)  # --concurrency, else the setting
    parts_limit_set(threads=threads if isinstance(threads, int) and threads > 0
                    else settings.CELERY_WORKER_CONCURRENCY,
                    takes_images=not sender or settings.IMAGE_QUEUE in queues.split(","))
    logger.info("queues %s; video parts at once: %d", queues or "(all)", parts_limit())
    pool_fit_threads(threads if isinstance(threads, int) and threads > 0
                     else settings.CELERY_WORKER_CONCURRENCY)
    _state["hostname"] = hostname
    threading.Thread(target=_beat, args=(hostname, detector, queues, timezone.now()),
                     name="pmr-heartbeat", daemon=True).start()


@worker_shutdown.connect
def report_out(**kwargs) -> None:

    _stop.set()
    if "hostname" in _state:
        try:
            close_old_connections()
            WorkerHeartbeat.objects.filter(hostname=_state["hostname"]).delete()
        except Exception:
            logger.warning("could not remove the heartbeat row", exc_info=True)
