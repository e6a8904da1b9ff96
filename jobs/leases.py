"""Leases: how the workers tell the others that they are alive.

A lease answers one question: is the process holding this job (or video part) still
alive? So it is renewed by the process's heartbeat (``jobs.runtime``), for as long as the
task holding the work runs in it — not by the work's progress, which depends on how busy
the machine is, how large the model is and what else the process runs. A lease lapses
only when its process stops beating: killed, hung, or cut off from the database. Then the
watchdog sends the work again.

Whether a live task makes progress is a separate question, with its own rule and its own
error ("stalled", see ``videos.services.requeue_stalled``): a slow task is not a dead
worker.

A :class:`Lease` describes one kind of leased row (image jobs, video parts); which rows
a process holds is the process's own state, kept by its ``WorkerRuntime``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Model, Q


@dataclass(frozen=True)
class Lease:
    """One kind of leased row.

    ``seconds``: how long a renewal lasts; ``live``: the rows whose lease may still be
    renewed (a finished job's is not); ``owner_field``: where a row names the task holding
    it (renewed only while it still does: work taken over by another task is not
    renewed), None where the row's state alone says whether it is still held.
    """

    name: str
    model: type[Model]
    seconds: Callable[[], float]
    live: Callable[[], Q]
    owner_field: str | None = None

    def expiry(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.seconds())

    def renew(self, held: Mapping[object, str], *, now: datetime) -> int:
        """Push back the lease of the rows ``held`` (pk -> owner); returns how many."""
        if not held:
            return 0
        if self.owner_field is None:
            mine = Q(pk__in=list(held))
        else:
            mine = Q()
            for pk, owner in held.items():
                mine |= Q(pk=pk, **{self.owner_field: owner})
        return self.model._default_manager.filter(mine & self.live()).update(
            lease_expires=self.expiry(now))
