"""Prometheus metrics: GET /metrics.

- HTTP requests and their latency, recorded by ``MetricsMiddleware`` in every gunicorn
  process (prometheus_client's multiprocess mode: PROMETHEUS_MULTIPROC_DIR, set by
  ``pmr/gunicorn.conf.py``, holds each process's samples; /metrics adds them up);
- at scrape time, from the database and the broker: jobs by kind and status, queue
  depth, live workers, recent mean inference time and video frames per second.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta

from django.conf import settings
from django.db.models import Count
from django.http import HttpResponse
from django.utils import timezone
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily

REQUESTS = Counter("pmr_http_requests_total", "HTTP requests served",
                   ["method", "route", "status"])
LATENCY = Histogram("pmr_http_request_duration_seconds", "HTTP request latency",
                    ["method", "route"],
                    buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60))


class MetricsMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        start = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        route = match.route if match else "unmatched"
        LATENCY.labels(request.method, route).observe(time.perf_counter() - start)
        REQUESTS.labels(request.method, route, str(response.status_code)).inc()
        return response


class ServiceCollector:
    """Numbers read when Prometheus scrapes: they describe the whole deployment."""

    def collect(self):
        from detection.models import Job, WorkerHeartbeat
        from detection.selectors import throughput

        now = timezone.now()
        jobs = GaugeMetricFamily("pmr_jobs", "Jobs by kind and status", labels=["kind", "status"])
        for row in Job.objects.values("kind", "status").annotate(n=Count("id")).order_by():
            jobs.add_metric([row["kind"], row["status"]], row["n"])
        yield jobs

        depth = GaugeMetricFamily("pmr_queue_depth", "Messages waiting in the broker queue",
                                  labels=["queue"])
        for queue, count in queue_depths().items():
            depth.add_metric([queue], count)
        yield depth

        stale = now - timedelta(seconds=settings.WORKER_STALE_SECONDS)
        yield GaugeMetricFamily("pmr_workers_live", "Workers with a recent heartbeat",
                                value=WorkerHeartbeat.objects.filter(last_seen__gte=stale)
                                .count())

        recent = throughput(since=now - timedelta(minutes=5))
        yield GaugeMetricFamily("pmr_image_inference_ms",
                                "Mean inference time of image jobs, last 5 minutes",
                                value=recent.image_inference_ms or 0)
        yield GaugeMetricFamily("pmr_image_total_ms",
                                "Mean submit-to-result time of image jobs, last 5 minutes",
                                value=recent.image_total_ms or 0)
        yield GaugeMetricFamily("pmr_video_frames_per_second",
                                "Video frames per second of processing, last 5 minutes",
                                value=recent.video_frames_per_second or 0)


def queue_depths() -> dict[str, int]:
    """Messages waiting per queue (Redis list lengths, or message files on disk)."""
    queues = [settings.IMAGE_QUEUE, settings.VIDEO_QUEUE]
    url = settings.CELERY_BROKER_URL
    try:
        if url.startswith(("redis://", "rediss://")):
            import redis

            client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
            return {queue: int(client.llen(queue)) for queue in queues}
        if url.startswith("filesystem://"):
            names = os.listdir(settings.BROKER_DIR)
            return {queue: sum(1 for n in names if n.endswith(f".{queue}.msg"))
                    for queue in queues}
    except Exception:
        return {}
    return {}


def metrics_view(request) -> HttpResponse:
    if settings.METRICS_TOKEN and request.headers.get("Authorization") != \
            f"Bearer {settings.METRICS_TOKEN}":
        return HttpResponse(status=401)
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(REQUESTS)
        registry.register(LATENCY)
    registry.register(ServiceCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
