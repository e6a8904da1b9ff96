"""HTTP request metrics, recorded in every web process by ``MetricsMiddleware``
(prometheus_client's multiprocess mode: PROMETHEUS_MULTIPROC_DIR, set by
``pmr/gunicorn.conf.py``, holds each process's samples; ``/metrics`` adds them up)."""

from __future__ import annotations

import time

from prometheus_client import Counter, Histogram

REQUESTS = Counter("pmr_http_requests_total", "HTTP requests served",
                   ["method", "route", "status"])
LATENCY = Histogram("pmr_http_request_duration_seconds", "HTTP request latency",
                    ["method", "route"],
                    buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60))


class MetricsMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        start = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        route = match.route if match else "unmatched"
        LATENCY.labels(request.method, route).observe(time.perf_counter() - start)
        REQUESTS.labels(request.method, route, str(response.status_code)).inc()
        return response
