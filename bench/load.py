"""Load: many image requests from many concurrent clients.

Starts PMR for real (gunicorn + one Celery worker) on Redis (REDIS_URL, default
redis://127.0.0.1:6379/0) and DATABASE_URL (else SQLite), with the default rate limits
unless told otherwise, and sends --requests POST /api/detect/image (640x480 JPEG) from
--clients concurrent clients. Every request must end in 201 (or 202) or an explicit 429;
afterwards every accepted job is read back and must hold its detection records.
Prints a table and JSON (also written to --json-out).

    python bench/load.py [--requests 500] [--clients 32] [--detect-rate 600/minute]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pmr.settings")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")

import django  # noqa: E402

django.setup()

import numpy as np  # noqa: E402
import requests  # noqa: E402

from bench.http_latency import test_image  # noqa: E402
from tests.integration.service import Service  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--detect-rate", default=None, help="THROTTLE_DETECT_RATE for the run")
    parser.add_argument("--json-out", default=str(ROOT / "bench" / "results" / "load.json"))
    args = parser.parse_args()

    data = test_image()
    env = {"THROTTLE_DETECT_RATE": args.detect_rate} if args.detect_rate else {}
    service = Service.create(Path(tempfile.mkdtemp(prefix="pmr-bench-load-")), **env)
    results: list[tuple[float, object]] = []
    lock = threading.Lock()
    todo = iter(range(args.requests))

    def client() -> None:
        session = requests.Session()
        while True:
            with lock:
                if next(todo, None) is None:
                    return
            start = time.perf_counter()
            try:
                response = session.post(f"{service.base_url}/api/detect/image",
                                        headers=service.headers(),
                                        files={"image": ("load.jpg", data, "image/jpeg")},
                                        timeout=300)
                outcome: object = response
            except requests.RequestException as exc:
                outcome = exc
            with lock:
                results.append((time.perf_counter() - start, outcome))

    try:
        service.start_worker(concurrency=32)
        service.start_web(env={"WEB_THREADS": str(max(16, args.clients))})
        service.wait_ready()
        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started

        statuses = Counter(o.status_code if isinstance(o, requests.Response)
                           else type(o).__name__ for _, o in results)
        accepted = [o.json() for _, o in results
                    if isinstance(o, requests.Response) and o.status_code in (201, 202)]
        missing = []
        for job in accepted:
            stored = service.wait_job(job["status_url"], timeout=600)
            if stored["status"] != "succeeded" or (
                    job.get("detections") is not None and
                    stored["detections"] != job["detections"]):
                missing.append(job["id"])
        throttled = [o for _, o in results if isinstance(o, requests.Response)
                     and o.status_code == 429]
        ok_latency = [t for t, o in results if isinstance(o, requests.Response)
                      and o.status_code == 201]
    finally:
        service.close()

    report = {
        "backends": service.backends, "requests": args.requests, "clients": args.clients,
        "detect_rate": args.detect_rate or "default (600/minute)",
        "statuses": dict(statuses), "wall_s": wall,
        "requests_per_second": len(results) / wall,
        "accepted_per_second": len(accepted) / wall,
        "p50_ms_201": 1000 * statistics.median(ok_latency) if ok_latency else None,
        "p95_ms_201": 1000 * float(np.percentile(ok_latency, 95)) if ok_latency else None,
        "throttled_with_retry_after": all("Retry-After" in r.headers for r in throttled),
        "accepted_jobs_checked": len(accepted), "accepted_jobs_missing_records": missing,
        "only_201_202_429": set(statuses) <= {201, 202, 429},
    }
    print(f"{args.requests} requests from {args.clients} clients in {wall:.1f} s "
          f"({report['requests_per_second']:.1f}/s): {dict(statuses)}")
    if ok_latency:
        print(f"201 latency p50 {report['p50_ms_201']:.0f} ms, p95 {report['p95_ms_201']:.0f} ms;"
              f" accepted {report['accepted_per_second']:.1f}/s")
    print(f"every answer 201/202/429: {report['only_201_202_429']}; 429s with Retry-After: "
          f"{report['throttled_with_retry_after']}; accepted jobs missing records: "
          f"{len(missing)} of {len(accepted)}")
    print(json.dumps(report, indent=2))
    Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json_out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
