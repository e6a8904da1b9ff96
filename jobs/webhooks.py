"""Completion webhooks: POST the job's JSON to its callback_url, with retries.

The body is an envelope, ``{"event": "job.succeeded" | "job.failed" | "job.cancelled",
"job": <the job's JSON, as GET /api/jobs/{id} gives it, with absolute URLs>}``, signed
with WEBHOOK_SECRET (``X-PMR-Signature: sha256=<hex HMAC-SHA256 of the body>``); the
event is also in ``X-PMR-Event``.

An attempt that fails (network error, timeout, non-2xx) is logged on the job and raises
:class:`DeliveryFailed`, which the task retries with Celery's exponential backoff and
full jitter (``retry_backoff``/``retry_jitter``: a random delay up to WEBHOOK_BACKOFF_SECONDS
doubled at each retry), until WEBHOOK_MAX_ATTEMPTS or WEBHOOK_MAX_SECONDS after the job
finished. A webhook never changes the job's status. Deliveries go to public addresses
only (``core.outbound``) and never follow a redirect.
"""

from __future__ import annotations

import hashlib
import hmac
import json

import requests
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core import outbound
from jobs.models import Job, Webhook, webhook_of
from jobs.serializers import JobDetailSerializer


class DeliveryFailed(Exception):
    """An attempt failed and another one is due (the task retries it)."""


def payload(job: Job, webhook: Webhook) -> bytes:
    data = JobDetailSerializer(job, context={"detections": (), "inline_detections": False,
                                             "base_url": webhook.base_url}).data
    return json.dumps({"event": f"job.{job.status}", "job": data}).encode()


def deliver(*, job_id: str, attempt: int) -> None:
    """One attempt; raises DeliveryFailed when another one is due."""
    job = Job.objects.select_related("video", "webhook").filter(pk=job_id).first()
    webhook = webhook_of(job) if job is not None else None
    if job is None or webhook is None:
        return
    if _elapsed(job) > settings.WEBHOOK_MAX_SECONDS:
        _log(job.pk, {"attempt": attempt, "at": timezone.now().isoformat(),
                      "gave_up": f"no delivery within {settings.WEBHOOK_MAX_SECONDS:g} s"})
        return
    body = payload(job, webhook)
    headers = {"Content-Type": "application/json", "User-Agent": "PMR-webhook/1",
               "X-PMR-Event": f"job.{job.status}", "X-PMR-Delivery-Attempt": str(attempt)}
    if settings.WEBHOOK_SECRET:
        digest = hmac.new(settings.WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
        headers["X-PMR-Signature"] = f"sha256={digest}"
    entry = {"attempt": attempt, "at": timezone.now().isoformat()}
    try:
        response = outbound.post(webhook.url, data=body, headers=headers,
                                 timeout=settings.WEBHOOK_TIMEOUT_SECONDS)
        entry["status_code"] = response.status_code
        delivered = 200 <= response.status_code < 300
    except outbound.RefusedAddress as exc:  # not sent, and never will be
        entry["error"] = f"refused: {exc}"[:500]
        _log(job.pk, entry)
        return
    except requests.RequestException as exc:
        entry["error"] = f"{type(exc).__name__}: {exc}"[:500]
        delivered = False
    _log(job.pk, entry)
    if delivered or attempt >= settings.WEBHOOK_MAX_ATTEMPTS:
        return
    raise DeliveryFailed(entry.get("error") or f"HTTP {entry['status_code']}")


def _elapsed(job: Job) -> float:
    """Seconds since the job finished."""
    return (timezone.now() - (job.finished_at or timezone.now())).total_seconds()


def _log(job_id, entry: dict) -> None:
    with transaction.atomic():
        webhook = Webhook.objects.select_for_update().filter(job_id=job_id).first()
        if webhook is not None:
            webhook.log = [*webhook.log, entry]
            webhook.save(update_fields=["log"])
