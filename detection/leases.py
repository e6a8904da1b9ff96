"""The work a worker process holds, and the leases that tell the others it is alive.

A lease answers one question: is the process holding this job (or video part) still
alive? So it is renewed by the process's heartbeat (``detection.worker``), for as long as
the task holding the work runs in it — not by the work's progress, which depends on how
busy the machine is, how large the model is and what else the process runs. A lease
lapses only when its process stops beating: killed, hung, or cut off from the database.
Then the watchdog sends the work again.

Whether a live task makes progress is a separate question, with its own rule and its own
error ("stalled", see ``videos.services.requeue_stalled``): a slow task is not a dead
worker.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta

from django.db.models import Model, Q
from django.utils import timezone


class Leases:
    """The rows of one model that this process holds, and their renewal.

    ``owner_field``: where a row names the task holding it (renewed only while it still
    does: work taken over by another task is not renewed); None where the row's state
    alone says whether it is still held (``live``).
    """

    def __init__(self, model: type[Model], *, seconds: Callable[[], float],
                 live: Callable[[], Q], owner_field: str | None = None) -> None:
        self.model = model
        self.seconds = seconds
        self.live = live
        self.owner_field = owner_field
        self._held: dict[object, str] = {}  # pk -> owner
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def hold(self, pk, owner: str = "") -> Iterator[None]:
        """While the block runs, the heartbeat renews the row's lease."""
        with self._lock:
            self._held[pk] = owner
        try:
            yield
        finally:
            with self._lock:
                self._held.pop(pk, None)

    def held(self) -> dict[object, str]:
        with self._lock:
            return dict(self._held)

    def renew(self, *, now=None) -> int:
        """Push back the lease of every row held here; returns how many were renewed."""
        held = self.held()
        if not held:
            return 0
        now = now or timezone.now()
        if self.owner_field is None:
            mine = Q(pk__in=list(held))
        else:
            mine = Q()
            for pk, owner in held.items():
                mine |= Q(pk=pk, **{self.owner_field: owner})
        return self.model.objects.filter(mine & self.live()).update(
            lease_expires=now + timedelta(seconds=self.seconds()))


_kinds: dict[str, Leases] = {}


def register(name: str, leases: Leases) -> Leases:
    _kinds[name] = leases
    return leases


def renew_all(*, now=None) -> dict[str, int]:
    """For the heartbeat: renew every lease this process holds, of every kind."""
    now = now or timezone.now()
    return {name: leases.renew(now=now) for name, leases in _kinds.items()}
