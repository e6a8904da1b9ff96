"""Image latency while a long video is processed, and video throughput with 1 and 2 workers.

Starts PMR for real on Redis (REDIS_URL, default redis://127.0.0.1:6379/0) and
DATABASE_URL (else SQLite): gunicorn and Celery workers (video-only workers take one
part at a time each, at WORKER_NICE=10 so that on a shared host they yield the CPU to
image work).

1. Image latency: one client posting a 640x480 JPEG, idle, then while a long video
   (the shared clips, looped to --video-seconds) is being processed. p50/p95 of each,
   in two layouts: "shared", one worker that takes both queues (the Procfile's and the
   compose file's: one worker per device, whose inference thread runs image requests
   before video frames), and "separate", an image worker beside a video worker.
2. Video throughput (frames/s, submit to finish, the video cut into 2 parts) with
   1 video worker, then 2 video workers of 1 thread each, then 2 workers of 2 threads.

Prints a table and JSON (also written to --json-out).

    python bench/scale_out.py [--requests 100] [--video-seconds 120]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pmr.settings")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")

import django  # noqa: E402

django.setup()

import av  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import requests  # noqa: E402

from bench.http_latency import post, test_image  # noqa: E402
from tests.integration.service import Service  # noqa: E402

VIDEOS = ROOT.parent / "shared" / "testdata" / "videos"


def looped_video(target: Path, seconds: int, fps: int = 25) -> Path:
    """The shared clips at 768x432, looped to ``seconds``, H.264."""
    written, needed = 0, seconds * fps
    with av.open(str(target), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = 768, 432, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "26"}
        while written < needed:
            for clip in sorted(VIDEOS.glob("*.mp4")):
                capture = cv2.VideoCapture(str(clip))
                while written < needed:
                    ok, frame = capture.read()
                    if not ok:
                        break
                    rgb = cv2.cvtColor(cv2.resize(frame, (768, 432)), cv2.COLOR_BGR2RGB)
                    container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
                    written += 1
        container.mux(stream.encode(None))
    return target


def latencies(service: Service, data: bytes, count: int) -> list[float]:
    session = requests.Session()
    return [post(session, service, data) for _ in range(count)]


def summary(values: list[float]) -> dict:
    return {"p50_ms": 1000 * statistics.median(values),
            "p95_ms": 1000 * float(np.percentile(values, 95)), "n": len(values)}


def submit_video(service: Service, path: Path) -> str:
    response = service.post_video(path, name=path.name)
    if response.status_code != 202:
        raise RuntimeError(response.text)
    return response.headers["Location"]


def video_fps(service: Service, path: Path) -> dict:
    start = time.perf_counter()
    job = service.wait_job(submit_video(service, path), timeout=3600)
    elapsed = time.perf_counter() - start
    if job["status"] != "succeeded":
        raise RuntimeError(job["error"])
    return {"frames": job["progress"]["frames_done"], "seconds": elapsed,
            "frames_per_second": job["progress"]["frames_done"] / elapsed,
            "parts": [(p["worker"].split("-it")[0], p["frames_done"]) for p in job["parts"]]}


def image_latency(service: Service, data: bytes, video: Path, count: int) -> dict:
    """Image latency idle, then while ``video`` is processed; the video's frames/s."""
    latencies(service, data, 10)  # warm-up
    print("image latency, idle...", file=sys.stderr)
    idle = latencies(service, data, count)
    start = time.perf_counter()
    url = submit_video(service, video)
    service.wait_job(url, until=lambda j: j["progress"]["frames_done"] > 0, timeout=600)
    print("image latency, while a video is processed...", file=sys.stderr)
    busy = latencies(service, data, count)
    progress = service.get(url).json()["progress"]
    job = service.wait_job(url, timeout=3600)
    result = {"image_latency_idle": summary(idle), "image_latency_during_video": summary(busy),
              "video_still_running_when_measured": progress["percent"] < 100,
              "video_frames_per_second": (job["progress"]["frames_done"]
                                          / (time.perf_counter() - start))}
    result["p95_ratio"] = (result["image_latency_during_video"]["p95_ms"]
                           / result["image_latency_idle"]["p95_ms"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--video-seconds", type=int, default=120)
    parser.add_argument("--json-out", default=str(ROOT / "bench" / "results" / "scale_out.json"))
    args = parser.parse_args()
    if not VIDEOS.exists():
        sys.exit(f"{VIDEOS} is absent: this benchmark needs ../shared/testdata/videos")

    workdir = Path(tempfile.mkdtemp(prefix="pmr-bench-scale-"))
    print("encoding the test video...", file=sys.stderr)
    video = looped_video(workdir / "long.mp4", args.video_seconds)
    short = looped_video(workdir / "short.mp4", max(20, args.video_seconds // 3))
    data = test_image()
    service = Service.create(workdir / "stack", VIDEO_MAX_PARTS="2", VIDEO_PART_MIN_FRAMES="50",
                             THROTTLE_DETECT_RATE="100000/minute")
    report: dict = {"backends": service.backends, "video": f"768x432, 25 fps, "
                    f"{args.video_seconds} s", "cpu_cores": os.cpu_count()}
    nice = {"WORKER_NICE": "10"}
    try:
        service.start_web()
        for layout in ("shared", "separate"):
            if layout == "shared":
                service.start_worker("worker", concurrency=16, queues="images,videos")
            else:
                service.start_worker("images", concurrency=16, queues="images")
                service.start_worker("video-1", concurrency=1, queues="videos", env=nice)
            service.wait_ready()
            time.sleep(3)  # every worker has reported in
            report[layout] = image_latency(service, data, video, args.requests)
            if layout == "shared":
                service.stop("worker")
        print("video throughput, 1 worker...", file=sys.stderr)
        report["video_1_worker"] = video_fps(service, short)
        service.stop("video-1")
        for threads in ("1", "2"):
            for name in ("video-a", "video-b"):
                service.start_worker(name, concurrency=1, queues="videos",
                                     env={**nice, "DETECTOR_THREADS": threads})
            service.wait_ready()
            time.sleep(3)  # both have reported in
            print(f"video throughput, 2 workers x {threads} thread(s)...", file=sys.stderr)
            report[f"video_2_workers_{threads}_thread"] = video_fps(service, short)
            service.stop("video-a")
            service.stop("video-b")
    finally:
        service.close()

    one = report["video_1_worker"]["frames_per_second"]
    for layout in ("shared", "separate"):
        idle, busy = (report[layout][f"image_latency_{when}"] for when in ("idle", "during_video"))
        print(f"{layout:<8} image p50/p95 idle {idle['p50_ms']:6.1f} / {idle['p95_ms']:6.1f} ms, "
              f"during video {busy['p50_ms']:6.1f} / {busy['p95_ms']:6.1f} ms   "
              f"(p95 ratio {report[layout]['p95_ratio']:.2f}, target <= 2; video "
              f"{report[layout]['video_frames_per_second']:.1f} frames/s)")
    for key in ("video_1_worker", "video_2_workers_1_thread", "video_2_workers_2_thread"):
        fps = report[key]["frames_per_second"]
        print(f"{key:<28} {fps:6.1f} frames/s  ({fps / one:.2f} x one worker)")
    print(json.dumps(report, indent=2))
    Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json_out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
