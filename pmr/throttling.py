"""Per-user request rates (429 with Retry-After), counted atomically in the shared cache.

Each rate (THROTTLE_<SCOPE>_RATE, "N/second|minute|hour|day") is a fixed window: the
cache key of the current window is incremented with one atomic operation (INCR on
Redis, sent with its EXPIRE in one round trip), so that concurrent requests cannot slip
past the limit the way a read-modify-write history can. If the cache is unreachable
(Redis down), requests are let through rather than refused: /readyz and the queue report
the outage.
"""

from __future__ import annotations

import logging
import re
import time
from functools import cache as memoize

import redis
from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from rest_framework.throttling import BaseThrottle

logger = logging.getLogger(__name__)

_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(rate: str) -> tuple[int, int]:
    count, _, period = rate.partition("/")
    return int(count), _PERIODS[period[0]]


@memoize
def _redis(location: str) -> redis.Redis:
    return redis.Redis.from_url(location, socket_connect_timeout=1, socket_timeout=1)


def count_hit(key: str, period: int) -> int:
    """Add one to a window's counter (created at 1, kept a little longer than the window);
    the count so far."""
    cache = caches["default"]
    if isinstance(cache, RedisCache):
        # One round trip, where cache.add + cache.incr take three (SET NX, EXISTS, INCR).
        name = cache.make_and_validate_key(key)
        location = settings.CACHES["default"]["LOCATION"]  # writes go to the first server
        first = re.split("[;,]", location)[0] if isinstance(location, str) else location[0]
        pipeline = _redis(first).pipeline(transaction=False)
        pipeline.incr(name)
        pipeline.expire(name, period + 1)
        return pipeline.execute()[0]
    cache.add(key, 0, timeout=period + 1)
    return cache.incr(key)


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
