"""Writes for image jobs: submit (and wait), and the watchdog's requeue. Running an image
job, in a worker, is ``images.runner`` (the image path's one module that loads the model).

An image job goes queued -> running (a worker took it: its lease, renewed by the worker's
heartbeat, says the worker is alive) -> succeeded or failed. A job whose worker died (its
lease lapsed) or whose message was lost is queued again by the watchdog.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.conf import settings
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from core.errors import ApiError
from images.uploads import inspect_image_upload
from jobs import catalog, dispatch, notify
from jobs.catalog import Choice
from jobs.leases import Lease
from jobs.models import Job
from jobs.services import job_create, job_delete, queue_unavailable
from jobs.uploads import safe_original_name, stored_name

# Worker-side image errors, as API error codes with their HTTP status.
IMAGE_ERRORS = {"empty": ("empty_file", 400), "not_an_image": ("not_an_image", 400),
                "corrupt": ("corrupt_image", 400), "too_large": ("too_large", 413),
                "unreadable": ("input_missing", 400)}
CLIENT_ERROR_STATUS = dict(IMAGE_ERRORS.values())

# A running image job's lease: its worker's heartbeat renews it while the task runs.
IMAGE_LEASE = Lease("image", Job, seconds=lambda: settings.IMAGE_STALE_SECONDS,
                    live=lambda: Q(kind=Job.Kind.IMAGE, status=Job.Status.RUNNING))


def image_job_submit(*, owner, upload: UploadedFile, params: dict,
                     job_id: uuid.UUID | None = None, model: Choice | None = None) -> Job:
    """Check the upload, store it under a generated name, create the job, queue it.

    ``job_id``: the new job's id, where the caller needs it before the job is queued
    (to listen for its completion); by default a new one. ``model``: the version to
    run (default: DETECTOR_MODEL's default version).
    """
    model = model or catalog.resolve(None)
    info = inspect_image_upload(upload, max_bytes=settings.MAX_IMAGE_UPLOAD_BYTES,
                                max_pixels=settings.MAX_IMAGE_PIXELS)
    name = default_storage.save(stored_name("images", info.extension), upload)
    try:
        with transaction.atomic():  # committed before the task can look for it
            job = job_create(
                job_id=job_id, kind=Job.Kind.IMAGE, owner=owner, params=params, input_file=name,
                model_name=model.name, model_version=model.version,
                original_filename=safe_original_name(upload.name),
                content_type=info.content_type, file_size=upload.size,
                width=info.width, height=info.height)
    except Exception:
        default_storage.delete(name)
        raise
    if not dispatch.send(dispatch.DETECT_IMAGE, str(job.id)):
        job_delete(job=job)  # the client is told; nothing is kept
        raise queue_unavailable()
    return job


def image_job_detect(*, owner, upload: UploadedFile, params: dict, timeout: float,
                     model: Choice | None = None) -> tuple[Job, bool]:
    """Submit an image and wait up to ``timeout`` s for it: (job, finished).

    An input the worker could not read is a client error: the job and its file are
    deleted and the ApiError raised, as if the web process had refused it.
    """
    job_id = uuid.uuid4()
    with notify.JobWaiter(job_id) as waiter:  # listening before the job is queued
        job = image_job_submit(owner=owner, upload=upload, params=params, job_id=job_id,
                               model=model)
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
    unfinished = (Job.Status.QUEUED, Job.Status.RUNNING)
    for pk, expires in Job.objects.filter(kind=Job.Kind.IMAGE, status__in=unfinished,
                                          lease_expires__lt=now).values_list("pk",
                                                                             "lease_expires"):
        again = now + timedelta(seconds=settings.QUEUE_STALE_SECONDS)
        # Back in the queue: not started, so that the message sent now may start it.
        if Job.objects.filter(pk=pk, status__in=unfinished, lease_expires=expires).update(
                status=Job.Status.QUEUED, lease_expires=again, started_at=None):
            if not dispatch.send(dispatch.DETECT_IMAGE, str(pk)):
                Job.objects.filter(pk=pk).update(lease_expires=now)  # next tick, again
                break
            requeued.append(str(pk))
    return requeued
