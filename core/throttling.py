"""Per-user request rates (429 with Retry-After), counted atomically in the shared cache.

Each rate (THROTTLE_<SCOPE>_RATE, "N/second|minute|hour|day") is a fixed window: the
cache key of the current window is created if missing (``cache.add``: SET NX on Redis) and
incremented (``cache.incr``: INCR), both atomic, so that concurrent requests cannot slip
past the limit the way a read-modify-write history can. If the cache is unreachable
(Redis down), requests are let through rather than refused: /readyz and the queue report
the outage.
"""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.core.cache import caches
from rest_framework.throttling import BaseThrottle

logger = logging.getLogger(__name__)

_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(rate: str) -> tuple[int, int]:
    count, _, period = rate.partition("/")
    return int(count), _PERIODS[period[0]]


def count_hit(key: str, period: int) -> int:
    """Add one to a window's counter (created at 0, kept a little longer than the window);
    the count so far."""
    cache = caches["default"]
    for _ in range(3):
        cache.add(key, 0, timeout=period + 1)
        try:
            return cache.incr(key)
        except ValueError:  # expired between the two: made again
            continue
    raise RuntimeError(f"the counter {key} keeps expiring")


class RateThrottle(BaseThrottle):
    scope = ""

    def identity(self, request, view) -> str | None:
        """Who is counted; None: this throttle does not apply to the request."""
        raise NotImplementedError

    def scope_for(self, view) -> str:
        return self.scope

    def allow_request(self, request, view) -> bool:
        scope = self.scope_for(view)
        rate = getattr(settings, f"THROTTLE_{scope.upper()}_RATE", None) if scope else None
        who = self.identity(request, view)
        if not rate or who is None:
            return True
        limit, period = parse_rate(rate)
        now = time.time()
        window = int(now // period)
        key = f"throttle:{scope}:{who}:{window}"
        try:
            hits = count_hit(key, period)
        except Exception:
            logger.warning("rate limiting skipped: the cache is unreachable", exc_info=True)
            return True
        self._wait = (window + 1) * period - now
        return hits <= limit

    def wait(self) -> float:
        return self._wait


class UserThrottle(RateThrottle):
    scope = "user"

    def identity(self, request, view):
        return f"user{request.user.pk}" if request.user.is_authenticated else None


class AnonThrottle(RateThrottle):
    scope = "anon"

    def identity(self, request, view):
        return None if request.user.is_authenticated else self.get_ident(request)


class ScopedThrottle(RateThrottle):
    """For views that name a ``throttle_scope`` (uploads: "detect")."""

    def scope_for(self, view):
        return getattr(view, "throttle_scope", "")

    def identity(self, request, view):
        if request.user.is_authenticated:
            return f"user{request.user.pk}"
        return self.get_ident(request)
