"""Celery tasks for video jobs: thin interfaces that take ids and call services."""

from __future__ import annotations

import logging
import socket

from celery import shared_task
from django.db import DatabaseError

from jobs.models import Job
from videos import runner, services

logger = logging.getLogger(__name__)


@shared_task(name="videos.process_video_part", bind=True, acks_late=True,
             reject_on_worker_lost=True, autoretry_for=(DatabaseError,), max_retries=5,
             retry_backoff=True, retry_backoff_max=60)
def process_video_part(self, job_id: str, index: int) -> None:
    # A part takes as long as it takes: the lease, renewed by the worker's heartbeat while
    # this runs, is what tells a live worker from a dead one.
    worker = self.request.hostname or socket.gethostname()
    try:
        runner.video_part_run(job_id=job_id, index=index, worker=worker)
    except DatabaseError:
        raise
    except Exception as exc:
        logger.exception("video job %s part %d failed", job_id, index)
        job = Job.objects.filter(pk=job_id).first()
        if job is not None:
            runner.fail(job, code="internal_error", message=f"{type(exc).__name__}: {exc}")


@shared_task(name="videos.annotate_video", acks_late=True)
def annotate_video(job_id: str) -> None:
    job = Job.objects.select_related("video").filter(
        pk=job_id, kind=Job.Kind.VIDEO, status=Job.Status.SUCCEEDED).first()
    if job is not None and not job.video.annotated_file:
        services.annotate_job(job=job)
