"""Prometheus metrics: GET /metrics.

- HTTP requests and their latency, recorded by ``core.metrics.MetricsMiddleware`` in
  every gunicorn process and added up here;
- at scrape time, from the database and the broker: jobs by kind and status, queue
  depth, live workers, recent mean inference time and video frames per second.
"""

from __future__ import annotations

import os
from datetime import timedelta

from django.conf import settings
from django.http import HttpResponse
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily

from core.metrics import LATENCY, REQUESTS
from jobs.dispatch import queue_depths
from jobs.selectors import service_state


class ServiceCollector:
    """Numbers read when Prometheus scrapes: they describe the whole deployment."""

    def collect(self):
        state = service_state(now=timezone.now(), recent=timedelta(minutes=5))
        jobs = GaugeMetricFamily("pmr_jobs", "Jobs by kind and status", labels=["kind", "status"])
        for (kind, status), n in state.jobs.items():
            jobs.add_metric([kind, status], n)
        yield jobs

        depth = GaugeMetricFamily("pmr_queue_depth", "Messages waiting in the broker queue",
                                  labels=["queue"])
        for queue, count in queue_depths().items():
            depth.add_metric([queue], count)
        yield depth

        yield GaugeMetricFamily("pmr_workers_live", "Workers with a recent heartbeat",
                                value=len(state.live_workers))
        recent = state.recent
        yield GaugeMetricFamily("pmr_image_inference_ms",
                                "Mean inference time of image jobs, last 5 minutes",
                                value=recent.image_inference_ms or 0)
        yield GaugeMetricFamily("pmr_image_total_ms",
                                "Mean submit-to-result time of image jobs, last 5 minutes",
                                value=recent.image_total_ms or 0)
        yield GaugeMetricFamily("pmr_video_frames_per_second",
                                "Video frames per second of processing, last 5 minutes",
                                value=recent.video_frames_per_second or 0)


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
