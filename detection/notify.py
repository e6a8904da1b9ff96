"""Telling a waiting web request that its job has finished.

With Redis (production), the worker publishes on a per-job channel and the request
blocks on it: no polling, no CPU spent waiting. Without Redis (the laptop default),
the request polls the job row with a short, growing interval.
"""

from __future__ import annotations

import contextlib
import time
from functools import cache

import redis
from django.conf import settings

from detection.models import Job


def _channel(job_id) -> str:
    return f"pmr:job-finished:{job_id}"


@cache
def _redis() -> redis.Redis | None:
    if not settings.NOTIFY_REDIS_URL:
        return None
    return redis.Redis.from_url(settings.NOTIFY_REDIS_URL, socket_timeout=5,
                                socket_connect_timeout=2, health_check_interval=30)


def _finished(job_id) -> bool:
    return Job.objects.filter(pk=job_id, status__in=Job.FINISHED).exists()


def job_finished(job_id) -> None:
    """Called by the worker after the job's final state is committed."""
    client = _redis()
    if client is not None:
        # If Redis is away, waiters still re-read the row every second.
        with contextlib.suppress(redis.RedisError):
            client.publish(_channel(job_id), "1")


def wait_for_job(job_id, timeout: float) -> bool:
    """Block until the job is finished or ``timeout`` seconds pass; True if finished."""
    deadline = time.monotonic() + timeout
    client = _redis()
    if client is not None:
        try:
            return _wait_redis(client, job_id, deadline)
        except redis.RedisError:
            pass  # Redis went away: polling still works
    delay = 0.002
    while True:
        if _finished(job_id):
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(delay, remaining))
        delay = min(delay * 1.5, 0.05)


def _wait_redis(client: redis.Redis, job_id, deadline: float) -> bool:
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    try:
        pubsub.subscribe(_channel(job_id))
        # Subscribed first, then read the row: a job that finished in between is seen.
        if _finished(job_id):
            return True
        while (remaining := deadline - time.monotonic()) > 0:
            # Wake up now and then to re-read the row (a notice lost with a Redis restart).
            if pubsub.get_message(timeout=min(remaining, 1.0)) is not None or _finished(job_id):
                return True
        return _finished(job_id)
    finally:
        pubsub.close()
