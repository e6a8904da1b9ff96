"""Metrics and logs: /metrics in Prometheus' format, JSON logs on request."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from tests.factories import JobFactory

pytestmark = pytest.mark.django_db


def scrape(client) -> dict[str, list]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    return {family.name: family.samples
            for family in text_string_to_metric_families(response.content.decode())}


def test_metrics_count_requests_and_describe_the_service(client):
    JobFactory.create_batch(2, kind="image", status="queued")
    now = timezone.now()
    JobFactory(kind="image", status="succeeded", inference_ms=30.0, total_ms=50.0,
               finished_at=now)
    JobFactory(kind="video", status="succeeded", frames_done=250, processing_ms=5000.0,
               finished_at=now)
    client.get("/healthz")
    client.get("/healthz")
    metrics = scrape(client)
    requests = [s for s in metrics["pmr_http_requests"]
                if s.labels.get("route") == "healthz" and s.name.endswith("_total")]
    assert requests and requests[0].value >= 2
    latency = metrics["pmr_http_request_duration_seconds"]
    assert any(s.labels.get("route") == "healthz" for s in latency)
    jobs = {(s.labels["kind"], s.labels["status"]): s.value for s in metrics["pmr_jobs"]}
    assert jobs[("image", "queued")] == 2 and jobs[("video", "succeeded")] == 1
    assert metrics["pmr_image_inference_ms"][0].value == 30.0
    assert metrics["pmr_video_frames_per_second"][0].value == 50.0
    assert "pmr_queue_depth" in metrics and "pmr_workers_live" in metrics


def test_metrics_can_require_a_token(client, settings):
    settings.METRICS_TOKEN = "scrape-me"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-me").status_code == 200


def test_logs_can_be_json_lines():
    result = subprocess.run([sys.executable, "-c", (
        "import django, logging, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'pmr.settings'; "
        "django.setup(); logging.getLogger('pmr.test').warning('hello %s', 'world')")],
        cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=60,
        env={**os.environ, "LOG_FORMAT": "json"})
    record = json.loads(result.stderr.strip().splitlines()[-1])
    assert record["message"] == "hello world"
    assert record["level"] == "WARNING" and record["logger"] == "pmr.test"
