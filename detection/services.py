"""Writes: creating, failing and deleting detection jobs, and the watchdog's requeue.

Web views call the ``*_submit`` and ``*_delete`` services. Running an image job, in a
worker, is ``detection.runner`` (the one module of the image path that loads the model).
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from django.conf import settings
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from detection import dispatch, leases, notify
from detection.models import Job
from detection.uploads import inspect_image_upload, safe_original_name, stored_name
from pmr.errors import ApiError

logger = logging.getLogger(__name__)

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


def ms_between(start, end) -> float:
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
        dispatch.send(dispatch.DETECT_IMAGE, str(job.id))
    except dispatch.BROKER_ERRORS as exc:
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


def requeue_stalled_images(*, now=None) -> list[str]:
    """For the watchdog: image jobs whose lease ran out — started by a worker that died
    (it stopped renewing the lease), or never started because their message was lost —
    are sent again."""
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
                dispatch.send(dispatch.DETECT_IMAGE, str(pk))
            except dispatch.BROKER_ERRORS:
                Job.objects.filter(pk=pk).update(lease_expires=now)  # next tick, again
                break
            requeued.append(str(pk))
    return requeued


def job_fail(*, job: Job, code: str, message: str) -> None:
    finished = timezone.now()
    Job.objects.filter(pk=job.pk).exclude(status__in=Job.FINISHED).update(
        status=Job.Status.FAILED, error_code=code, error_message=message[:2000],
        finished_at=finished, total_ms=ms_between(job.created_at, finished))
    notify.job_finished(job.pk)


def job_delete(*, job: Job) -> None:
    """Remove a job, its detections and its files (a running job's worker stops)."""
    Job.objects.filter(pk=job.pk).exclude(status__in=Job.FINISHED).update(
        status=Job.Status.CANCELLED)
    delete_input(job)
    _delete_file(job.annotated_file.name if job.annotated_file else "")
    _delete_file(thumbnail_name(job))
    job.delete()


def thumbnail_name(job: Job) -> str:
    return f"thumbnails/{job.pk}.jpg"


def delete_input(job: Job) -> None:
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
            delete_input(job)
            _delete_file(job.annotated_file.name if job.annotated_file else "")
            _delete_file(thumbnail_name(job))
            Job.objects.filter(pk=job.pk).update(input_file="", annotated_file="")
            counts["media_deleted"] += 1
    return counts
