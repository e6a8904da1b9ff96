"""Starvation: one video job while clients send images without pause.

Starts PMR for real (gunicorn + one Celery worker) with `make run`'s defaults (leases,
heartbeat, watchdog, rate limits, worker threads; SQLite and the filesystem broker, or
REDIS_URL / DATABASE_URL when set), submits one video, then has --clients clients of
--users users POST an image without pause for --seconds. The video must succeed with
every frame; the images must all be answered (201/202, or 429 with Retry-After).
Reports the video's frames/s during and after the image load and the image latencies.
Prints a table and JSON (also written to --json-out).

    python bench/starvation.py [--seconds 120] [--clients 8] [--users 4]
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

import django  # noqa: E402

django.setup()

import numpy as np  # noqa: E402
import requests  # noqa: E402

from bench.machine import cpuinfo  # noqa: E402
from tests.integration.service import Service  # noqa: E402

SHARED = ROOT.parent / "shared" / "testdata"
# The settings the test stacks change, back at the values `make run` uses.
MAKE_RUN_DEFAULTS = {"WORKER_HEARTBEAT_SECONDS": "2", "WORKER_STALE_SECONDS": "6",
                     "VIDEO_LEASE_SECONDS": "30", "WATCHDOG_SECONDS": "5",
                     "WEBHOOK_BACKOFF_SECONDS": "2", "THROTTLE_USER_RATE": "1200/minute"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--video", default=str(SHARED / "videos" /
                                               "intel_one-by-one-person-detection.mp4"))
    parser.add_argument("--image", default=str(SHARED / "darknet" / "dog.jpg"))
    parser.add_argument("--json-out", default=str(ROOT / "bench" / "results" /
                                                  "starvation.json"))
    args = parser.parse_args()

    image = Path(args.image).read_bytes()
    service = Service.create(Path(tempfile.mkdtemp(prefix="pmr-bench-starvation-")),
                             **MAKE_RUN_DEFAULTS)
    latencies: list[float] = []
    statuses: Counter = Counter()
    lock = threading.Lock()
    samples: list[tuple[float, int]] = []  # (seconds since the video was accepted, frames)
    try:
        # `make run`'s worker: the Procfile's, with CELERY_WORKER_CONCURRENCY's threads.
        service.start_worker(concurrency=int(os.environ.get("CELERY_WORKER_CONCURRENCY", 16)))
        service.start_web()
        service.wait_ready()
        tokens = [service.token] + [service.manage("create_api_token", f"bench-user-{i}")
                                    .stdout.strip() for i in range(1, args.users)]
        posted = service.post_video(Path(args.video), name=Path(args.video).name)
        assert posted.status_code == 202, posted.text
        url = posted.headers["Location"]
        accepted_at = time.monotonic()
        stop_at = accepted_at + args.seconds

        def client(token: str) -> None:
            session = requests.Session()
            while time.monotonic() < stop_at:
                start = time.perf_counter()
                try:
                    response = session.post(f"{service.base_url}/api/detect/image",
                                            headers=service.headers(token),
                                            files={"image": ("dog.jpg", image)}, timeout=300)
                    outcome: object = response.status_code
                except requests.RequestException as exc:
                    outcome = type(exc).__name__
                with lock:
                    statuses[outcome] += 1
                    if outcome == 201:
                        latencies.append(time.perf_counter() - start)
                if outcome == 429:
                    time.sleep(float(response.headers.get("Retry-After", 1)))

        threads = [threading.Thread(target=client, args=(tokens[i % len(tokens)],))
                   for i in range(args.clients)]
        for thread in threads:
            thread.start()
        job = service.job(url)
        while job["status"] in ("queued", "running"):
            samples.append((time.monotonic() - accepted_at, job["progress"]["frames_done"]))
            time.sleep(1)
            job = service.job(url)
        samples.append((time.monotonic() - accepted_at, job["progress"]["frames_done"]))
        for thread in threads:
            thread.join()
    finally:
        service.close()

    def rate(first: float, last: float) -> float | None:
        inside = [(t, f) for t, f in samples if first <= t <= last]
        if len(inside) < 2 or inside[-1][0] == inside[0][0]:
            return None
        return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])

    finished_s = samples[-1][0]
    report = {
        "cpu": cpuinfo("model name"), "cpu_family": cpuinfo("cpu family"),
        "cores": os.cpu_count(),
        "backends": service.backends, "seconds_of_image_load": args.seconds,
        "clients": args.clients, "users": args.users,
        "video": Path(args.video).name, "video_status": job["status"],
        "video_error": job["error"], "video_frames_done": job["progress"]["frames_done"],
        "video_frames_total": job["progress"]["frames_total"],
        "video_every_frame": job["status"] == "succeeded"
        and job["progress"]["frames_done"] == job["progress"]["frames_total"],
        "video_attempts": [p["attempts"] for p in job["parts"] or []],
        "video_fps_during_load": rate(0, args.seconds),
        "video_fps_after_load": rate(args.seconds, finished_s),
        "video_finished_after_s": finished_s,
        "image_statuses": {str(k): v for k, v in statuses.items()},
        "images_per_second": statuses[201] / args.seconds,
        "image_p50_ms": 1000 * statistics.median(latencies) if latencies else None,
        "image_p95_ms": 1000 * float(np.percentile(latencies, 95)) if latencies else None,
    }
    rows = [("CPU", f"{report['cpu']} (family {report['cpu_family']}), {report['cores']} cores"),
            ("backends", f"{service.backends}"),
            ("video", f"{report['video_status']}, {report['video_frames_done']}/"
                      f"{report['video_frames_total']} frames, attempts "
                      f"{report['video_attempts']}"),
            ("video frames/s during the image load", _fmt(report["video_fps_during_load"])),
            ("video frames/s after it", _fmt(report["video_fps_after_load"])),
            ("images answered", f"{dict(statuses)} ({report['images_per_second']:.1f}/s)"),
            ("image latency p50 / p95 (201)", f"{_fmt(report['image_p50_ms'], 0)} / "
                                              f"{_fmt(report['image_p95_ms'], 0)} ms")]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(json.dumps(report, indent=2))
    Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json_out).write_text(json.dumps(report, indent=2))
    if not report["video_every_frame"]:
        sys.exit(1)


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


if __name__ == "__main__":
    main()
