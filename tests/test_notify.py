"""A waiting request hears of its job's end through Redis (a real server: REDIS_URL), on
one connection per web thread however many requests it serves, and never takes another
job's notice for its own."""

from __future__ import annotations

import os
import threading
import uuid

import pytest
import redis

from jobs import notify
from tests.conftest import missing


@pytest.fixture
def notices(settings):
    url = os.environ.get("REDIS_URL")
    if not url:
        missing("REDIS_URL is not set: job notices go through a Redis server")
    settings.NOTIFY_REDIS_URL = url
    notify._redis.cache_clear()
    notify._drop_thread_pubsub()
    yield redis.Redis.from_url(url)
    notify._drop_thread_pubsub()
    notify._redis.cache_clear()


def _connections(server: redis.Redis) -> int:
    return int(server.info("stats")["total_connections_received"])


def test_a_thread_waits_for_many_jobs_on_one_connection(notices, db):
    before = _connections(notices)
    for _ in range(50):
        job_id = uuid.uuid4()
        with notify.JobWaiter(job_id) as waiter:
            notify.job_finished(job_id)
            assert waiter.wait(timeout=30)  # the notice, not the row: there is no row
    opened = _connections(notices) - before
    assert opened <= 2, opened  # the thread's subscriber (and the publisher's pool)


def test_an_earlier_jobs_late_notice_is_not_taken_for_this_ones(notices, db):
    first, second = uuid.uuid4(), uuid.uuid4()
    with notify.JobWaiter(first):
        pass  # the waiter gave up on it (a timeout): unsubscribed
    with notify.JobWaiter(second) as waiter:
        notify.job_finished(first)  # too late for the first, and not the second's
        assert not waiter.wait(timeout=0.5)
        notify.job_finished(second)
        assert waiter.wait(timeout=30)


def test_threads_have_their_own_subscriber(notices, db):
    ids = [uuid.uuid4() for _ in range(4)]
    ready = threading.Barrier(len(ids) + 1)
    heard: dict = {}

    def wait_for(job_id):
        with notify.JobWaiter(job_id) as waiter:
            ready.wait(timeout=30)
            heard[job_id] = waiter.wait(timeout=30)
        notify._drop_thread_pubsub()

    threads = [threading.Thread(target=wait_for, args=(job_id,)) for job_id in ids]
    for thread in threads:
        thread.start()
    ready.wait(timeout=30)
    for job_id in ids:
        notify.job_finished(job_id)
    for thread in threads:
        thread.join(timeout=60)
    assert heard == dict.fromkeys(ids, True)
