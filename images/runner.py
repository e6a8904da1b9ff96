"""Running image jobs, in a worker: the image path's only module that loads the model.

A job is marked running as its worker takes it; its lease (renewed by the heartbeat while
the task runs, see ``jobs.leases``) tells a live worker from a dead one. The detections
are stored with the job's final state, in one transaction.
"""

from __future__ import annotations

import concurrent.futures
import logging
import socket
from datetime import timedelta

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import connection, transaction
from django.utils import timezone

from engine import ImageError, OutOfMemory, decode_image
from images.services import IMAGE_ERRORS, IMAGE_LEASE
from jobs import notify, runtime
from jobs.catalog import job_ref
from jobs.inference import batcher_for, weights_sha256
from jobs.models import Detection, Job
from jobs.services import delete_input, job_fail, ms_between
from jobs.thumbnails import thumbnail_save

logger = logging.getLogger(__name__)


def image_job_run(*, job_id: str) -> None:
    """Run one image job (in a worker). Safe to run again for the same job.

    A worker that dies half-way leaves the job running with a lease nobody renews: the
    redelivered task (or the watchdog's message) runs it again once the lease lapsed.
    """
    started = timezone.now()
    job = _image_job_start(job_id, started)
    if job is None:
        job = Job.objects.filter(pk=job_id, kind=Job.Kind.IMAGE).first()
        if job is None or job.is_finished:
            return
        if job.started_at is not None and job.lease_expires and job.lease_expires >= started:
            # A duplicate message: a live worker has the job (and renews its lease).
            logger.info("image job %s is running elsewhere: message dropped", job.pk)
            return
        # Every earlier attempt died with its worker: do not let one input kill them all.
        job_fail(job=job, code="worker_lost", message=f"the worker died {job.attempts} "
                 "times running this job")
        return
    with runtime.current().hold(IMAGE_LEASE, job.pk):
        _image_job_finish(job, started)


def _image_job_finish(job: Job, started) -> None:
    """Run a started image job to its final state."""
    try:
        with default_storage.open(job.input_file.name, "rb") as stream:
            data = stream.read()
        image = decode_image(data, max_pixels=settings.MAX_IMAGE_PIXELS)
    except (ImageError, FileNotFoundError) as exc:
        code = exc.code if isinstance(exc, ImageError) else "unreadable"
        job_fail(job=job, code=IMAGE_ERRORS[code][0], message=str(exc))
        delete_input(job)
        return

    with batcher_for(job_ref(job)) as batcher:
        try:
            detector = batcher.detector()
        except FileNotFoundError as exc:
            job_fail(job=job, code="model_unavailable", message=str(exc))
            return
        pending = batcher.submit(image, detector.options(**job.params))
        try:
            # The threads pool cannot interrupt a task: the soft time limit is enforced here.
            result = pending.result(timeout=settings.IMAGE_TASK_SOFT_TIME_LIMIT)
        except concurrent.futures.TimeoutError:
            job_fail(job=job, code="timeout", message="inference did not finish within "
                     f"{settings.IMAGE_TASK_SOFT_TIME_LIMIT} s")
            return
        except OutOfMemory as exc:
            job_fail(job=job, code="out_of_memory", message=str(exc))
            return
    rows = [Detection(job=job, frame_index=0, timestamp_ms=0, class_id=d.class_id,
                      label=d.label, confidence=d.confidence, x1=d.x1, y1=d.y1, x2=d.x2, y2=d.y2)
            for d in result.detections]
    with transaction.atomic():
        finished = timezone.now()
        # Only a running job is finished here: a duplicate run (a requeue racing a slow
        # worker) or a cancellation in between stores nothing.
        updated = Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING).update(
            status=Job.Status.SUCCEEDED, started_at=started, finished_at=finished,
            queue_ms=ms_between(job.created_at, started), inference_ms=result.inference_ms,
            batch_size=result.batch_size, total_ms=ms_between(job.created_at, finished),
            worker=socket.gethostname(), model_sha256=weights_sha256(detector),
            runtime=detector.runtime, precision=detector.precision)
        if updated:
            Detection.objects.bulk_create(rows, batch_size=1000)
    notify.job_finished(job.pk)
    if updated:
        thumbnail_save(job, image)


def _image_job_start(job_id, started) -> Job | None:
    """Mark an image job running (one more attempt, a new lease) and load what
    running it needs, in one statement; None if it is not to be run: gone, finished, out
    of attempts, or started by a worker whose lease on it has not expired.

    An UPDATE ... RETURNING (PostgreSQL; SQLite 3.35+), where the ORM would take a SELECT
    and an UPDATE: a database round trip off every image request.
    """
    meta, ops = Job._meta, connection.ops

    def column(name: str) -> str:
        return ops.quote_name(meta.get_field(name).column)

    loaded = ("id", "kind", "status", "created_at", "input_file", "params", "model_name",
              "model_version", "attempts")
    sql = (f"UPDATE {ops.quote_name(meta.db_table)} SET {column('status')} = %s, "
           f"{column('started_at')} = %s, "
           f"{column('attempts')} = {column('attempts')} + 1, {column('worker')} = %s, "
           f"{column('lease_expires')} = %s WHERE {column('id')} = %s AND "
           f"{column('kind')} = %s AND {column('status')} IN (%s, %s) AND "
           f"{column('attempts')} < %s "
           f"AND ({column('started_at')} IS NULL OR {column('lease_expires')} < %s) "
           f"RETURNING {', '.join(column(name) for name in loaded)}")
    params = [Job.Status.RUNNING.value, ops.adapt_datetimefield_value(started),
              socket.gethostname(),
              ops.adapt_datetimefield_value(
                  started + timedelta(seconds=settings.IMAGE_STALE_SECONDS)),
              meta.pk.get_db_prep_value(job_id, connection), Job.Kind.IMAGE.value,
              Job.Status.QUEUED.value, Job.Status.RUNNING.value, settings.JOB_MAX_ATTEMPTS,
              ops.adapt_datetimefield_value(started)]
    rows = list(Job.objects.raw(sql, params))  # read to the end: SQLite commits then
    return rows[0] if rows else None
