"""Telling a waiting web request that its job has finished.

With Redis (production), the worker publishes on a per-job channel and the request
blocks on it: no polling, no CPU spent waiting. The request subscribes before its job is
queued, so no notice can come before the subscription, and the job's row need not be
read first. Without Redis (the laptop default), the request polls the job row with a
short, growing interval.
"""

from __future__ import annotations

import contextlib
import threading
import time
from functools import cache

import redis
from django.conf import settings

from jobs.models import Job

# With Redis, how often a waiting request re-reads the row anyway: a notice published
# while Redis restarted is lost.
RECHECK_SECONDS = 1.0


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
        # If Redis is away, waiters still re-read the row every RECHECK_SECONDS.
        with contextlib.suppress(redis.RedisError):
            client.publish(_channel(job_id), "1")


# Each thread keeps its subscriber connection from one request to the next (closing a
# PubSub disconnects it: a new TCP connection a request), subscribed to one job at a time.
_local = threading.local()


def _thread_pubsub(client: redis.Redis) -> redis.client.PubSub:
    pubsub = getattr(_local, "pubsub", None)
    if pubsub is None:
        pubsub = _local.pubsub = client.pubsub(ignore_subscribe_messages=True)
    return pubsub


def _drop_thread_pubsub() -> None:
    pubsub = getattr(_local, "pubsub", None)
    _local.pubsub = None
    if pubsub is not None:
        with contextlib.suppress(redis.RedisError):
            pubsub.close()


class JobWaiter:
    """Waits for one job to finish. Enter it before the job is queued::

        with JobWaiter(job_id) as waiter:
            queue the job
            finished = waiter.wait(timeout)
    """

    def __init__(self, job_id) -> None:
        self.job_id = job_id
        self._channel = _channel(job_id)
        self._pubsub: redis.client.PubSub | None = None

    def __enter__(self) -> JobWaiter:
        client = _redis()
        if client is not None:
            try:
                pubsub = _thread_pubsub(client)
                pubsub.subscribe(self._channel)
                self._pubsub = pubsub
            except redis.RedisError:
                _drop_thread_pubsub()  # Redis is away: polling still works
        return self

    def __exit__(self, *exc_info) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            try:
                pubsub.unsubscribe(self._channel)
            except redis.RedisError:
                _drop_thread_pubsub()  # a new connection next time

    def wait(self, timeout: float) -> bool:
        """Block until the job is finished or ``timeout`` seconds pass; True if finished."""
        deadline = time.monotonic() + timeout
        if self._pubsub is not None:
            try:
                return self._wait_notice(deadline)
            except redis.RedisError:
                pass  # Redis went away: polling still works
        delay = 0.002
        while True:
            if _finished(self.job_id):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(delay, remaining))
            delay = min(delay * 1.5, 0.05)

    def _wait_notice(self, deadline: float) -> bool:
        recheck = time.monotonic() + RECHECK_SECONDS
        while (remaining := deadline - (now := time.monotonic())) > 0:
            if now >= recheck:
                if _finished(self.job_id):
                    return True
                recheck = now + RECHECK_SECONDS
            # None: the wait ran out, or a (un)subscription's confirmation came. A notice
            # for another channel is an earlier job's of this thread, published before
            # its unsubscription took effect: not this one's.
            message = self._pubsub.get_message(timeout=min(remaining, recheck - now))
            if message is not None and message["channel"] in (self._channel,
                                                              self._channel.encode()):
                return True
        return _finished(self.job_id)
