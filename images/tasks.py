"""Celery tasks for image jobs: thin interfaces that take ids and call services.

Only workers import task modules (Celery's autodiscovery, at worker start); everything
else sends tasks by name (``jobs.dispatch``).
"""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings
from django.db import DatabaseError

from images import runner
from jobs.models import Job
from jobs.services import job_fail

logger = logging.getLogger(__name__)


@shared_task(name="detection.detect_image", bind=True, acks_late=True,
             reject_on_worker_lost=True, autoretry_for=(DatabaseError,), max_retries=5,
             retry_backoff=True, retry_backoff_max=30,
             soft_time_limit=settings.IMAGE_TASK_SOFT_TIME_LIMIT,
             time_limit=settings.IMAGE_TASK_TIME_LIMIT)
def detect_image(self, job_id: str) -> None:
    # The task's name is older than this module: queued messages keep working.
    try:
        runner.image_job_run(job_id=job_id)
    except DatabaseError:
        raise  # retried by autoretry_for
    except Exception as exc:
        logger.exception("image job %s failed", job_id)
        job = Job.objects.filter(pk=job_id).first()
        if job is not None:
            job_fail(job=job, code="internal_error", message=f"{type(exc).__name__}: {exc}")
