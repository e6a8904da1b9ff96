"""Liveness and readiness probes."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.utils import timezone
from kombu import Connection

from core.errors import error_body
from jobs.models import WorkerHeartbeat


def healthz(request) -> JsonResponse:
    """The process is up and serving."""
    return JsonResponse({"status": "ok"})


def _database() -> dict:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return {"ok": True, "vendor": connection.vendor}


def _broker() -> dict:
    url = settings.CELERY_BROKER_URL
    with Connection(url, connect_timeout=2,
                    transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS) as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=2)
    return {"ok": True, "transport": url.split("://", 1)[0]}


def _workers() -> dict:
    """Live workers (recent heartbeat); every queue needs at least one consuming it."""
    since = timezone.now() - timedelta(seconds=settings.WORKER_STALE_SECONDS)
    live = list(WorkerHeartbeat.objects.filter(last_seen__gte=since).order_by("hostname"))
    served = {queue for w in live for queue in w.queues.split(",") if queue}
    missing = [q for q in (settings.IMAGE_QUEUE, settings.VIDEO_QUEUE) if q not in served]
    return {"ok": bool(live) and not missing, "count": len(live),
            "queues_without_worker": missing,
            "workers": [{"hostname": w.hostname, "device": w.device, "model": w.model_name,
                         "precision": w.precision, "queues": w.queues,
                         "models_loaded": w.models_loaded,
                         "last_seen": w.last_seen.isoformat()} for w in live]}


def readyz(request) -> JsonResponse:
    """Database, broker and at least one live worker: 200, else 503 saying what is missing."""
    checks = {}
    for name, check in (("database", _database), ("broker", _broker), ("workers", _workers)):
        try:
            checks[name] = check()
        except Exception as exc:
            checks[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    ready = all(check["ok"] for check in checks.values())
    if ready:
        return JsonResponse({"status": "ready", "checks": checks})
    failing = ", ".join(name for name, check in checks.items() if not check["ok"])
    body = {"status": "not_ready", "checks": checks,
            **error_body("not_ready", f"not ready: {failing}", checks)}
    return JsonResponse(body, status=503)
