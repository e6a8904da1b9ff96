"""Celery tasks every kind of job has: completion webhooks, retention.

The tasks keep the names they were first sent under, so that messages already queued
when a deployment upgrades still find their task.
"""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings

from jobs import services, webhooks

logger = logging.getLogger(__name__)


@shared_task(name="videos.send_webhook", bind=True, acks_late=True,
             autoretry_for=(webhooks.DeliveryFailed,), max_retries=None,
             retry_backoff=settings.WEBHOOK_BACKOFF_SECONDS,
             retry_backoff_max=int(settings.WEBHOOK_MAX_SECONDS), retry_jitter=True)
def send_webhook(self, job_id: str) -> None:
    # How many attempts and for how long: webhooks.deliver decides (WEBHOOK_MAX_*).
    webhooks.deliver(job_id=job_id, attempt=self.request.retries + 1)


@shared_task(name="detection.apply_retention")
def apply_retention() -> dict:
    """Run by Celery beat every RETENTION_INTERVAL_SECONDS."""
    counts = services.retention_apply()
    if any(counts.values()):
        logger.info("retention: %s", counts)
    return counts
