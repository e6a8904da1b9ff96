"""Writes: creating, running, finishing and deleting detection jobs.

Only these functions change a job's status. Web views call the ``*_submit`` and
``*_delete`` services; Celery tasks call the ``*_run`` ones.
"""

from __future__ import annotations

import concurrent.futures
import logging
import socket
import uuid
from datetime import timedelta

import kombu.exceptions
from django.conf import settings
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from detection import leases, notify
from detection.engine import ImageError, decode_image
from detection.engine.detector import OutOfMemory
from detection.inference import get_batcher, weights_sha256
from detection.models import Detection, Job
from detection.uploads import inspect_image_upload, safe_original_name, stored_name
from pmr.errors import ApiError

logger = logging.getLogger(__name__)

# What publishing a task raises when the broker cannot be reached.
BROKER_ERRORS = (kombu.exceptions.OperationalError, ConnectionError, OSError)

# Worker-side image errors, as API error codes with their HTTP status.
IMAGE_ERRORS = {"empty": ("empty_file", 400), "not_an_image": ("not_an_image", 400),
                "corrupt": ("corrupt_image", 400), "too_large": ("too_large", 413),
                "unreadable": ("input_missing", 400)}
CLIENT_ERROR_STATUS = dict(IMAGE_ERRORS.values())


# Image jobs this process is running (started, not yet finished): the heartbeat renews
# their leases.
image_leases = leases.register("image", leases.Leases(
    Job, seconds=lambda: settings.IMAGE_STALE_SECONDS,
    live=lambda: Q(kind=Job.Kind.IMAGE, status=Job.Status.QUEUED)))


def _ms(start, end) -> float:
    return (end - start).total_seconds() * 1000


# What a job keeps of its input, copied to a re-run of it.
MEDIA_FIELDS = ("original_filename", "content_type", "file_size", "width", "height", "fps",
                "frame_count", "duration_ms", "codec")


def job_create(*, kind: str, owner, params: dict, input_file: str, model_name: str = "",
               job_id: uuid.UUID | None = None, **fields) -> Job:
    """Create a queued job: the one way every path (API, compatibility layers, re-runs)
    does, so that each has what the workers and the watchdog need — a lease, by which a
    job whose message is lost is sent again; the model; the input. ``fields``: the
    input's facts (MEDIA_FIELDS), ``frames_total``, ``callback_url``, ``parent``..."""
    return Job.objects.create(
        id=job_id or uuid.uuid4(), kind=kind, owner=owner, params=params,
        model_name=model_name or settings.DETECTOR_MODEL, input_file=input_file,
        lease_expires=timezone.now() + timedelta(seconds=settings.QUEUE_STALE_SECONDS),
        **fields)


def image_job_submit(*, owner, upload: UploadedFile, params: dict,
                     job_id: uuid.UUID | None = None) -> Job:
    """Check the upload, store it under a generated name, create the job, queue it.

    ``job_id``: the new job's id, where the caller needs it before the job is queued
    (to listen for its completion); by default a new one.
    """
    from detection.tasks import detect_image

    info = inspect_image_upload(upload, max_bytes=settings.MAX_IMAGE_UPLOAD_BYTES,
                                max_pixels=settings.MAX_IMAGE_PIXELS)
    name = default_storage.save(stored_name("images", info.extension), upload)
    try:
        with transaction.atomic():  # committed before the task can look for it
            job = job_create(
                job_id=job_id, kind=Job.Kind.IMAGE, owner=owner, params=params, input_file=name,
                original_filename=safe_original_name(upload.name),
                content_type=info.content_type, file_size=upload.size,
                width=info.width, height=info.height)
    except Exception:
        default_storage.delete(name)
        raise
    try:
        detect_image.delay(str(job.id))
    except BROKER_ERRORS as exc:
        job_delete(job=job)  # the client is told; nothing is kept
        raise ApiError("queue_unavailable", "the job queue cannot be reached; try again shortly",
                       status_code=503, details={"retry_after_s": 5}) from exc
    return job


def image_job_detect(*, owner, upload: UploadedFile, params: dict,
                     timeout: float) -> tuple[Job, bool]:
    """Submit an image and wait up to ``timeout`` s for it: (job, finished).

    An input the worker could not read is a client error: the job and its file are
    deleted and the ApiError raised, as if the web process had refused it.
    """
    job_id = uuid.uuid4()
    with notify.JobWaiter(job_id) as waiter:  # listening before the job is queued
        job = image_job_submit(owner=owner, upload=upload, params=params, job_id=job_id)
        finished = waiter.wait(timeout)
    job.refresh_from_db()
    if finished and job.error_code in CLIENT_ERROR_STATUS:
        error = ApiError(job.error_code, job.error_message,
                         status_code=CLIENT_ERROR_STATUS[job.error_code])
        job_delete(job=job)
        raise error
    return job, finished


def image_job_run(*, job_id: str) -> None:
    """Run one image job (in a worker). Safe to run again for the same job.

    An image takes tens of milliseconds, so the job goes from queued to its final
    state in one transaction, detections included: a worker that dies half-way leaves
    it queued, for the redelivered task to run again.
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
    with image_leases.hold(job.pk):
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
        _delete_input(job)
        return

    batcher = get_batcher(job.model_name)
    try:
        detector = batcher.detector()
    except FileNotFoundError as exc:
        job_fail(job=job, code="model_unavailable", message=str(exc))
        return
    pending = batcher.submit(image, detector.options(**job.params))
    try:
        # The threads pool cannot interrupt a task: the soft time limit is enforced here.
        result = pending.result(timeout=settings.CELERY_TASK_SOFT_TIME_LIMIT)
    except concurrent.futures.TimeoutError:
        job_fail(job=job, code="timeout", message="inference did not finish within "
                 f"{settings.CELERY_TASK_SOFT_TIME_LIMIT} s")
        return
    except OutOfMemory as exc:
        job_fail(job=job, code="out_of_memory", message=str(exc))
        return
    rows = [Detection(job=job, frame_index=0, timestamp_ms=0, class_id=d.class_id,
                      label=d.label, confidence=d.confidence, x1=d.x1, y1=d.y1, x2=d.x2, y2=d.y2)
            for d in result.detections]
    with transaction.atomic():
        finished = timezone.now()
        # Only a queued job is finished here: a duplicate run (a requeue racing a slow
        # worker) or a cancellation in between stores nothing.
        updated = Job.objects.filter(pk=job.pk, status=Job.Status.QUEUED).update(
            status=Job.Status.SUCCEEDED, started_at=started, finished_at=finished,
            queue_ms=_ms(job.created_at, started), inference_ms=result.inference_ms,
            batch_size=result.batch_size, total_ms=_ms(job.created_at, finished),
            worker=socket.gethostname(), model_sha256=weights_sha256(job.model_name))
        if updated:
            Detection.objects.bulk_create(rows, batch_size=1000)
    notify.job_finished(job.pk)


def _image_job_start(job_id, started) -> Job | None:
    """Mark a queued image job started (one more attempt, a new lease) and load what
    running it needs, in one statement; None if it is not to be run: gone, finished, out
    of attempts, or started by a worker whose lease on it has not expired.

    An UPDATE ... RETURNING (PostgreSQL; SQLite 3.35+), where the ORM would take a SELECT
    and an UPDATE: a database round trip off every image request.
    """
    meta, ops = Job._meta, connection.ops

    def column(name: str) -> str:
        return ops.quote_name(meta.get_field(name).column)

    loaded = ("id", "kind", "status", "created_at", "input_file", "params", "model_name",
              "attempts")
    sql = (f"UPDATE {ops.quote_name(meta.db_table)} SET {column('started_at')} = %s, "
           f"{column('attempts')} = {column('attempts')} + 1, {column('worker')} = %s, "
           f"{column('lease_expires')} = %s WHERE {column('id')} = %s AND "
           f"{column('kind')} = %s AND {column('status')} = %s AND {column('attempts')} < %s "
           f"AND ({column('started_at')} IS NULL OR {column('lease_expires')} < %s) "
           f"RETURNING {', '.join(column(name) for name in loaded)}")
    params = [ops.adapt_datetimefield_value(started), socket.gethostname(),
              ops.adapt_datetimefield_value(
                  started + timedelta(seconds=settings.IMAGE_STALE_SECONDS)),
              meta.pk.get_db_prep_value(job_id, connection), Job.Kind.IMAGE.value,
              Job.Status.QUEUED.value, settings.JOB_MAX_ATTEMPTS,
              ops.adapt_datetimefield_value(started)]
    rows = list(Job.objects.raw(sql, params))  # read to the end: SQLite commits then
    return rows[0] if rows else None


def requeue_stalled_images(*, now=None) -> list[str]:
    """For the watchdog: image jobs whose lease ran out — started by a worker that died
    (it stopped renewing the lease), or never started because their message was lost —
    are sent again."""
    from detection.tasks import detect_image

    now = now or timezone.now()
    requeued = []
    for pk, expires in Job.objects.filter(kind=Job.Kind.IMAGE, status=Job.Status.QUEUED,
                                          lease_expires__lt=now).values_list("pk",
                                                                             "lease_expires"):
        again = now + timedelta(seconds=settings.QUEUE_STALE_SECONDS)
        # Back in the queue: not started, so that the message sent now may start it.
        if Job.objects.filter(pk=pk, lease_expires=expires).update(lease_expires=again,
                                                                    started_at=None):
            try:
                detect_image.delay(str(pk))
            except BROKER_ERRORS:
                Job.objects.filter(pk=pk).update(lease_expires=now)  # next tick, again
                break
            requeued.append(str(pk))
    return requeued


def job_fail(*, job: Job, code: str, message: str) -> None:
    finished = timezone.now()
    Job.objects.filter(pk=job.pk).exclude(status__in=Job.FINISHED).update(
        status=Job.Status.FAILED, error_code=code, error_message=message[:2000],
        finished_at=finished, total_ms=_ms(job.created_at, finished))
    notify.job_finished(job.pk)


def job_delete(*, job: Job) -> None:
    """Remove a job, its detections and its files (a running job's worker stops)."""
    Job.objects.filter(pk=job.pk).exclude(status__in=Job.FINISHED).update(
        status=Job.Status.CANCELLED)
    _delete_input(job)
    _delete_file(job.annotated_file.name if job.annotated_file else "")
    _delete_file(thumbnail_name(job))
    job.delete()


def thumbnail_name(job: Job) -> str:
    return f"thumbnails/{job.pk}.jpg"


def _delete_input(job: Job) -> None:
    _delete_file(job.input_file.name if job.input_file else "")


def _delete_file(name: str) -> None:
    if name:
        try:
            default_storage.delete(name)
        except OSError:
            logger.warning("could not delete %s", name, exc_info=True)


def retention_apply(*, now=None) -> dict:
    """Delete what is past its time-to-live (see RETENTION_* settings); return counts."""
    now = now or timezone.now()
    counts = {"media_deleted": 0, "jobs_deleted": 0}
    if settings.RETENTION_JOBS_DAYS:
        cutoff = now - timedelta(days=settings.RETENTION_JOBS_DAYS)
        for job in Job.objects.filter(status__in=Job.FINISHED, finished_at__lt=cutoff).iterator():
            job_delete(job=job)
            counts["jobs_deleted"] += 1
    if settings.RETENTION_MEDIA_DAYS:
        cutoff = now - timedelta(days=settings.RETENTION_MEDIA_DAYS)
        expired = Job.objects.filter(status__in=Job.FINISHED, finished_at__lt=cutoff).exclude(
            input_file="", annotated_file="")
        for job in expired.iterator():
            _delete_input(job)
            _delete_file(job.annotated_file.name if job.annotated_file else "")
            _delete_file(thumbnail_name(job))
            Job.objects.filter(pk=job.pk).update(input_file="", annotated_file="")
            counts["media_deleted"] += 1
    return counts
