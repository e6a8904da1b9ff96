"""A worker process's runtime, started for real (its threads, the database): the heartbeat
reports in and renews what the process holds, the watchdog runs on its own timer and
outlives a failing check, and stopping it takes the worker's row away."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.db import close_old_connections
from django.utils import timezone

from images.services import IMAGE_LEASE
from jobs import runtime
from jobs.models import Job, WorkerHeartbeat
from tests.factories import JobFactory

pytestmark = pytest.mark.django_db(transaction=True)


def wait_for(condition, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        close_old_connections()
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_the_heartbeat_and_the_watchdog_run_apart_until_the_runtime_stops(settings):
    settings.WORKER_HEARTBEAT_SECONDS = 0.1
    settings.WATCHDOG_SECONDS = 0.5
    settings.IMAGE_STALE_SECONDS = 60
    checks: list[float] = []
    twice = threading.Event()

    def flaky_check() -> list[str]:
        checks.append(time.monotonic())
        if len(checks) == 1:
            raise RuntimeError("the database went away")  # logged; the next tick runs
        if len(checks) >= 2:
            twice.set()
        return []

    held = JobFactory(kind="image", status="running", lease_expires=timezone.now())
    other = JobFactory(kind="image", status="running", lease_expires=timezone.now())
    worker = runtime.WorkerRuntime(
        identity=runtime.Identity(hostname="worker@runtime-test", device="cpu",
                                  precision="fp32", queues="images"),
        watchdog_checks=[flaky_check])
    try:
        with worker.hold(IMAGE_LEASE, held.pk):
            worker.start()
            assert wait_for(lambda: WorkerHeartbeat.objects.filter(
                hostname="worker@runtime-test", queues="images").exists())
            # Renewed by the heartbeat: a lease a full IMAGE_STALE_SECONDS ahead.
            assert wait_for(lambda: Job.objects.get(pk=held.pk).lease_expires
                            > timezone.now() + timedelta(seconds=50))
            assert twice.wait(60), "the watchdog stopped after a failing check"
        beats = WorkerHeartbeat.objects.get(hostname="worker@runtime-test").last_seen
        assert wait_for(lambda: WorkerHeartbeat.objects.get(
            hostname="worker@runtime-test").last_seen > beats)  # it goes on beating
    finally:
        worker.stop()
    close_old_connections()
    assert not WorkerHeartbeat.objects.filter(hostname="worker@runtime-test").exists()
    # Only what the process held was renewed; the watchdog ran on its own, slower timer.
    assert Job.objects.get(pk=other.pk).lease_expires < timezone.now() + timedelta(seconds=5)
    assert checks[1] - checks[0] >= 0.4
