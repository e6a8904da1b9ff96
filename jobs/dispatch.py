"""The one way work is sent to the workers.

Tasks are sent by name, so that what sends them (web views, services, the watchdog)
never imports the tasks or what the tasks run — the detector, and with it PyTorch — and
services and tasks do not import each other. A broker that cannot be reached is handled
here, once: the failure is logged and :func:`send` answers False (what to do then is the
caller's: tell the client, or leave the work to the watchdog's next tick);
:func:`send_on_commit` hands it to the caller's ``on_error``, if any.

With ``task_always_eager`` (the unit tests), a task runs in this process, as
``Task.delay`` would run it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable

import kombu.exceptions
import redis
from celery import current_app as app
from django.conf import settings
from django.db import transaction

logger = logging.getLogger(__name__)

# What publishing a task raises when the broker cannot be reached.
BROKER_ERRORS = (kombu.exceptions.OperationalError, ConnectionError, OSError)

DETECT_IMAGE = "detection.detect_image"
PROCESS_VIDEO_PART = "videos.process_video_part"
ANNOTATE_VIDEO = "videos.annotate_video"
SEND_WEBHOOK = "videos.send_webhook"
SCORE_MODELS = "review.score_models"


def send(name: str, *args, countdown: float | None = None) -> bool:
    """Send one task now; False if the broker cannot be reached (logged)."""
    return _publish(name, [args], countdown=countdown) is None


def _publish(name: str, calls: list[tuple], *,
             countdown: float | None = None) -> Exception | None:
    """Send; the broker's error, logged, if it cannot be reached."""
    try:
        send_many(name, calls, countdown=countdown)
    except BROKER_ERRORS as exc:
        logger.warning("%s %s not sent: the broker is unreachable (%s)", name, calls, exc)
        return exc
    return None


def send_many(name: str, calls: Iterable[tuple], *, countdown: float | None = None) -> None:
    """Send the task once per argument tuple, over one broker connection (raises one of
    BROKER_ERRORS if the broker cannot be reached)."""
    if app.conf.task_always_eager:
        if name not in app.tasks:
            app.loader.import_default_modules()  # registers the tasks, as a worker's start
        for args in calls:
            app.tasks[name].apply(args=args, throw=app.conf.task_eager_propagates)
        return
    with app.producer_or_acquire() as producer:
        for args in calls:
            app.send_task(name, args=args, countdown=countdown, producer=producer)


def send_on_commit(name: str, calls: Iterable[tuple], *,
                   on_error: Callable[[Exception], None] | None = None) -> None:
    """Send once the current transaction commits (at once outside one): the worker that
    takes the task finds what it refers to. A broker error is logged, then given to
    ``on_error``."""
    calls = list(calls)

    def go() -> None:
        error = _publish(name, calls)
        if error is not None and on_error is not None:
            on_error(error)

    transaction.on_commit(go)


def queue_depths() -> dict[str, int]:
    """Messages waiting per queue (Redis list lengths, or message files on disk)."""
    queues = [settings.IMAGE_QUEUE, settings.VIDEO_QUEUE]
    url = settings.CELERY_BROKER_URL
    try:
        if url.startswith(("redis://", "rediss://")):
            client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
            return {queue: int(client.llen(queue)) for queue in queues}
        if url.startswith("filesystem://"):
            names = os.listdir(settings.BROKER_DIR)
            return {queue: sum(1 for n in names if n.endswith(f".{queue}.msg"))
                    for queue in queues}
    except Exception:
        return {}
    return {}
