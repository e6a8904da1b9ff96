"""What one worker process holds and does beside its tasks, in one object.

A :class:`WorkerRuntime` is built when a Celery worker starts (``pmr.worker``) and owns
the process's state: the work in hand (the rows whose leases it renews), the slots that
bound how much of one kind of work runs at once, the loaded models' batchers, the
heartbeat (a thread: report in, renew the leases) and the watchdog (its own timer: send
again the work of dead workers, with the checks the apps register). Outside a worker
(``manage.py detect``, the unit tests' eager tasks) the process has a runtime that is
never started: work is held, and nothing renews it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from jobs.leases import Lease
from jobs.models import WorkerHeartbeat

logger = logging.getLogger("pmr.worker")


class Slots:
    """At most ``limit()`` of something at once in this process."""

    def __init__(self, limit: Callable[[], int]) -> None:
        self.limit = limit
        self.running = 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self.running >= self.limit():
                return False
            self.running += 1
            return True

    def free(self) -> None:
        with self._lock:
            self.running -= 1


@dataclass
class Identity:
    """How the worker reports itself (its heartbeat row)."""

    hostname: str
    device: str = ""
    precision: str = ""
    queues: str = ""
    threads: int = 0  # 0: not a worker (CELERY_WORKER_CONCURRENCY stands in)
    takes_images: bool = True


@dataclass
class WorkerRuntime:
    identity: Identity = field(default_factory=lambda: Identity(hostname=""))
    watchdog_checks: list[Callable[[], list[str]]] = field(default_factory=list)
    batchers: dict = field(default_factory=dict)  # model (jobs.inference.Target.key) -> batcher
    slots: dict[str, Slots] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._held: dict[Lease, dict[object, str]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.started_at = timezone.now()

    # The work in hand.
    @contextlib.contextmanager
    def hold(self, lease: Lease, pk, owner: str = "") -> Iterator[None]:
        """While the block runs, the heartbeat renews the row's lease."""
        with self._lock:
            self._held.setdefault(lease, {})[pk] = owner
        try:
            yield
        finally:
            with self._lock:
                self._held[lease].pop(pk, None)

    def held(self, lease: Lease) -> dict[object, str]:
        with self._lock:
            return dict(self._held.get(lease, {}))

    def renew(self, *, now=None) -> dict[str, int]:
        """Renew the lease of every row held here; returns how many, per kind."""
        now = now or timezone.now()
        with self._lock:
            kinds = list(self._held)
        return {lease.name: lease.renew(self.held(lease), now=now) for lease in kinds}

    def slots_for(self, name: str, limit: Callable[[], int]) -> Slots:
        with self._lock:
            return self.slots.setdefault(name, Slots(limit))

    # The heartbeat and the watchdog.
    def report(self) -> None:
        """Report in (the row /readyz and the dashboard read) and renew the leases."""
        close_old_connections()
        me = self.identity
        WorkerHeartbeat.objects.update_or_create(hostname=me.hostname, defaults={
            "pid": os.getpid(), "device": me.device, "queues": me.queues,
            "model_name": settings.DETECTOR_MODEL, "precision": me.precision,
            "models_loaded": self.models_loaded(),
            "started_at": self.started_at, "last_seen": timezone.now()})
        self.renew()

    def models_loaded(self) -> list[str]:
        """The models loaded here (name, or name@version for an uploaded one)."""
        with self._lock:
            batchers = dict(self.batchers)
        return sorted(key.partition("#")[0] for key, batcher in batchers.items()
                      if getattr(batcher, "loaded", False) and not batcher.failed)

    def watch(self) -> list[str]:
        """Run the watchdog's checks once (any live worker may: requeueing is atomic per
        job); returns what they requeued, said with why."""
        close_old_connections()
        return [line for check in self.watchdog_checks for line in check()]

    def start(self) -> None:
        self._threads = [
            threading.Thread(target=self._every, args=(settings.WORKER_HEARTBEAT_SECONDS,
                                                       self.report, "heartbeat"),
                             name="pmr-heartbeat", daemon=True),
            threading.Thread(target=self._every, args=(settings.WATCHDOG_SECONDS,
                                                       self._watch_and_log, "watchdog"),
                             name="pmr-watchdog", daemon=True)]
        for thread in self._threads:
            thread.start()

    def _watch_and_log(self) -> None:
        for line in self.watch():
            logger.warning("%s: requeued", line)

    def _every(self, seconds: float, run: Callable[[], None], what: str) -> None:
        while True:
            try:
                run()
            except Exception:
                logger.warning("%s failed", what, exc_info=True)  # the database may be down
            if self._stop.wait(seconds):
                return

    def stop(self) -> None:
        """Stop beating and remove the heartbeat row (the worker is going away)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        if self.identity.hostname:
            try:
                close_old_connections()
                WorkerHeartbeat.objects.filter(hostname=self.identity.hostname).delete()
            except Exception:
                logger.warning("could not remove the heartbeat row", exc_info=True)


_current = WorkerRuntime()


def current() -> WorkerRuntime:
    """This process's runtime (a worker's, once it started; else one never started)."""
    return _current


def install(runtime: WorkerRuntime) -> WorkerRuntime:
    """At worker start: the runtime every task of the process uses from now on."""
    global _current
    runtime.batchers.update(_current.batchers)  # models loaded before the worker started
    _current = runtime
    return runtime
