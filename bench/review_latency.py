"""The review dashboard's round trips with 100,000 detections in the database.

Starts PMR's web tier for real (gunicorn, with the README's settings) on DATABASE_URL when
set (else SQLite), fills the database with 100,000 detection records (one long video job
and 60 image jobs, as the dashboard's query-count test does), logs in to the admin as a
reviewer and times, over HTTP with a keep-alive session like a browser's, every request
the job page's script makes: each review change (confirm, reject, relabel, reset; add and
remove a box; mark reviewed) and each read (a frame's boxes, a range of frames to draw
over the playing video, the history, the page's data). Request types are interleaved in
rounds, on detections picked at random across the whole video; figures are medians and
95th percentiles per endpoint. Prints a table and JSON (also written to --json-out).

    python bench/review_latency.py [--rounds 40]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pmr.settings")

import django  # noqa: E402

django.setup()

import requests  # noqa: E402

from bench.machine import cpuinfo  # noqa: E402
from tests.integration.service import Service  # noqa: E402

FILL = """
from django.contrib.auth.models import User
from jobs.models import Detection, Job, Video
owner = User.objects.create_user("owner")
User.objects.create_superuser("bench-reviewer", "r@example.com", "bench-pass-123")
params = {"min_confidence": 0.25, "iou_threshold": 0.45, "classes": None,
          "max_detections": 100}
video = Job.objects.create(kind="video", owner=owner, status="succeeded", params=params,
                           model_name="yolov3-tiny", width=640, height=480)
Video.objects.create(job=video, fps=25.0, frame_count=10_000, duration_ms=400_000,
                     frames_total=10_000, frames_done=10_000)
labels = [(0, "person"), (2, "car"), (16, "dog"), (7, "truck")]
rows = [Detection(job=video, frame_index=i // 10, timestamp_ms=(i // 10) * 40,
                  class_id=labels[i % 4][0], label=labels[i % 4][1],
                  confidence=0.3 + (i % 70) / 100, x1=1 + i % 50, y1=2, x2=300, y2=400)
        for i in range(94_000)]
for _ in range(60):
    image = Job.objects.create(kind="image", owner=owner, status="succeeded", params=params,
                               model_name="yolov3-tiny", width=640, height=480)
    rows += [Detection(job=image, class_id=c, label=n, confidence=0.5, x1=1, y1=1, x2=9, y2=9)
             for c, n in labels * 25]
Detection.objects.bulk_create(rows, batch_size=10_000)
print(video.pk, Detection.objects.count())
"""


def log_in(base: str) -> requests.Session:
    session = requests.Session()
    session.get(f"{base}/admin/login/", timeout=30)
    answer = session.post(f"{base}/admin/login/?next=/admin/", timeout=30, data={
        "username": "bench-reviewer", "password": "bench-pass-123", "next": "/admin/",
        "csrfmiddlewaretoken": session.cookies["csrftoken"]})
    answer.raise_for_status()
    session.headers.update({"Accept": "application/json",
                            "X-CSRFToken": session.cookies["csrftoken"],
                            "Referer": f"{base}/admin/"})
    return session


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--json-out", default=str(ROOT / "bench" / "results" /
                                                  "review_latency.json"))
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="pmr-review-bench-"))
    service = Service.create(workdir)
    try:
        filled = service.manage("shell", "-c", FILL).stdout.strip().splitlines()[-1].split()
        video_id, count = filled[0], int(filled[1])
        base = service.start_web()
        session = log_in(base)
        job = f"{base}/admin/jobs/job/{video_id}"
        first = session.get(f"{job}/review/frame/0", timeout=30).json()["detections"]
        rng = random.Random(0)
        timings: dict[str, list[float]] = {}

        def timed(name: str, method: str, url: str, **kwargs) -> requests.Response:
            started = time.perf_counter()
            response = session.request(method, url, timeout=30, **kwargs)
            timings.setdefault(name, []).append(1000 * (time.perf_counter() - started))
            if response.status_code >= 400:
                raise RuntimeError(f"{name}: {response.status_code} {response.text[:300]}")
            return response

        timed("page data (GET)", "GET", f"{job}/review/data")  # warm-up, not counted
        timings.clear()
        for _ in range(args.rounds):
            frame = rng.randrange(9_400)
            # The same rank on another frame (the rows were written frame after frame).
            detection = rng.choice(first)["id"] + 10 * frame
            steps = [
                ("confirm", "POST", f"{job}/detections/{detection}/confirm", {}),
                ("reject", "POST", f"{job}/detections/{detection}/reject", {}),
                ("relabel", "POST", f"{job}/detections/{detection}/relabel",
                 {"data": {"label": "bus"}}),
                ("reset (undo)", "POST", f"{job}/detections/{detection}/reset", {}),
                ("add box", "POST", f"{job}/boxes",
                 {"data": {"label": "cat", "x1": 10, "y1": 10, "x2": 90, "y2": 90,
                           "frame_index": frame}}),
                ("mark reviewed", "POST", f"{job}/mark-reviewed", {}),
                ("frame's boxes (GET)", "GET", f"{job}/review/frame/{frame}", {}),
                ("10 s of boxes (GET)", "GET", f"{job}/review/boxes",
                 {"params": {"from": frame, "to": frame + 250}}),
                ("history (GET)", "GET", f"{job}/review/history", {}),
                ("page data (GET)", "GET", f"{job}/review/data", {}),
            ]
            rng.shuffle(steps)
            for name, method, url, kwargs in steps:
                answer = timed(name, method, url, **kwargs)
                if name == "add box":
                    box = answer.json()["id"]
                    timed("remove box", "POST", f"{job}/boxes/{box}/remove")
        rows = {name: {"n": len(v), "p50_ms": round(statistics.median(v), 1),
                       "p95_ms": round(percentile(v, 0.95), 1),
                       "max_ms": round(max(v), 1)} for name, v in timings.items()}
        changes = [v for name, values in timings.items() if "GET" not in name for v in values]
        result = {
            "benchmark": "review_latency", "run": uuid.uuid4().hex[:8],
            "machine": {"cpu": cpuinfo("model name"), "cores": os.cpu_count()},
            "database": service.backends["database"], "detections": count,
            "rounds": args.rounds, "endpoints": rows,
            "all_changes": {"n": len(changes), "p50_ms": round(statistics.median(changes), 1),
                            "p95_ms": round(percentile(changes, 0.95), 1)},
        }
    finally:
        service.close()
    print(f"{'endpoint':<22} {'n':>4} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    for name, row in sorted(rows.items()):
        print(f"{name:<22} {row['n']:>4} {row['p50_ms']:>8} {row['p95_ms']:>8} "
              f"{row['max_ms']:>8}")
    every = result["all_changes"]
    print(f"{'every review change':<22} {every['n']:>4} {every['p50_ms']:>8} "
          f"{every['p95_ms']:>8}")
    print(f"{count} detections, {result['database']}, {result['machine']['cpu']}")
    Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json_out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
