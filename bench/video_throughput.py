"""Video throughput end to end, against the engine and a plain OpenCV DNN loop; worker memory.

Starts PMR for real (gunicorn + one Celery worker; Redis from REDIS_URL, default
redis://127.0.0.1:6379/0; DATABASE_URL when set, else SQLite) and measures, on the
shared clip intel_one-by-one-person-detection.mp4 (768x432, 1394 frames):

1. PMR end to end: frames / seconds from the start of the upload to the last
   detection record stored (the job's finish);
2. the engine's own batched throughput on the same frames, decoded beforehand;
3. a plain loop: decode a frame with OpenCV, run OpenCV DNN on it, next frame.

Then the worker's peak memory (resident set, the worker's whole process tree, sampled
every 0.2 s) while it processes a 5-minute 1080p video made from the shared clips.
Rounds alternate the three runs; figures are medians. Prints a table and JSON.

    python bench/video_throughput.py [--rounds 3] [--skip-memory]
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
import psutil  # noqa: E402
from django.conf import settings  # noqa: E402

from engine import model_info  # noqa: E402
from engine.benchmark import _postprocess_opencv  # noqa: E402
from jobs.inference import get_detector  # noqa: E402
from tests.integration.service import Service  # noqa: E402

VIDEOS = ROOT.parent / "shared" / "testdata" / "videos"
CLIP = VIDEOS / "intel_one-by-one-person-detection.mp4"


def decode_all(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))


def engine_fps(frames: list[np.ndarray]) -> float:
    detector = get_detector()
    batch = settings.VIDEO_BATCH_SIZE
    start = time.perf_counter()
    for first in range(0, len(frames), batch):
        detector.detect(frames[first:first + batch])
    return len(frames) / (time.perf_counter() - start)


def opencv_loop_fps(path: Path) -> float:
    paths = model_info(settings.DETECTOR_MODEL).paths(settings.WEIGHTS_DIR)
    net = cv2.dnn.readNetFromDarknet(str(paths.cfg), str(paths.weights))
    outputs = net.getUnconnectedOutLayersNames()
    size = get_detector().input_size[0]
    capture = cv2.VideoCapture(str(path))
    count = 0
    start = time.perf_counter()
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        blob = cv2.dnn.blobFromImage(frame, 1 / 255.0, (size, size), swapRB=True)
        net.setInput(blob)
        heads = net.forward(outputs)
        _postprocess_opencv(list(heads), [frame])
        count += 1
    return count / (time.perf_counter() - start)


def pmr_fps(service: Service, path: Path, **fields) -> tuple[float, dict]:
    """Frames / seconds from the upload to the job's finish, and the finished job."""
    start = time.perf_counter()
    response = service.post_video(path, name=path.name, **fields)
    if response.status_code != 202:
        raise RuntimeError(response.text)
    job = service.wait_job(response.headers["Location"], timeout=3600)
    elapsed = time.perf_counter() - start
    if job["status"] != "succeeded":
        raise RuntimeError(job["error"])
    return job["progress"]["frames_done"] / elapsed, job


def make_long_1080p(target: Path, seconds: int = 300, fps: int = 25) -> int:
    """A 1920x1080 H.264 video looping the shared clips, upscaled."""
    clips = sorted(VIDEOS.glob("*.mp4"))
    needed = seconds * fps
    written = 0
    with av.open(str(target), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = 1920, 1080, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "28"}
        while written < needed:
            for clip in clips:
                capture = cv2.VideoCapture(str(clip))
                while written < needed:
                    ok, frame = capture.read()
                    if not ok:
                        break
                    big = cv2.resize(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), (1920, 1080))
                    container.mux(stream.encode(av.VideoFrame.from_ndarray(big, format="rgb24")))
                    written += 1
        container.mux(stream.encode(None))
    return written


def peak_memory(service: Service, path: Path) -> dict:
    worker = psutil.Process(service.processes["worker1"].pid)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                rss = sum(p.memory_info().rss for p in [worker, *worker.children(True)])
                peak[0] = max(peak[0], rss)
            except psutil.Error:
                pass
            time.sleep(0.2)

    baseline = sum(p.memory_info().rss for p in [worker, *worker.children(True)])
    thread = threading.Thread(target=sample)
    thread.start()
    try:
        fps, job = pmr_fps(service, path)
    finally:
        done.set()
        thread.join()
    return {"video": f"{job['video']['width']}x{job['video']['height']}, "
                     f"{job['video']['frames']} frames, {job['video']['duration_ms'] / 1000:.0f} s",
            "worker_rss_before_mb": baseline / 2**20, "worker_peak_rss_mb": peak[0] / 2**20,
            "end_to_end_fps": fps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--json-out", default=str(ROOT / "bench" / "results" / "video.json"))
    args = parser.parse_args()
    if not CLIP.exists():
        sys.exit(f"{CLIP} is absent: this benchmark needs ../shared/testdata/videos")

    frames = decode_all(CLIP)
    service = Service.create(Path(tempfile.mkdtemp(prefix="pmr-bench-video-")))
    runs: dict[str, list[float]] = {"pmr_end_to_end": [], "engine_batched": [],
                                    "opencv_dnn_loop": []}
    try:
        service.start_worker(concurrency=4)
        service.start_web()
        service.wait_ready()
        engine_fps(frames[:32])  # warm-up
        for round_number in range(args.rounds):
            runs["pmr_end_to_end"].append(pmr_fps(service, CLIP)[0])
            runs["engine_batched"].append(engine_fps(frames))
            runs["opencv_dnn_loop"].append(opencv_loop_fps(CLIP))
            print(f"round {round_number + 1}/{args.rounds}: "
                  + ", ".join(f"{k} {v[-1]:.1f} fps" for k, v in runs.items()), file=sys.stderr)
        memory = None
        if not args.skip_memory:
            long_video = service.workdir / "five-minutes-1080p.mp4"
            print("encoding the 5-minute 1080p video...", file=sys.stderr)
            make_long_1080p(long_video)
            memory = peak_memory(service, long_video)
    finally:
        service.close()

    medians = {name: statistics.median(values) for name, values in runs.items()}
    detector = get_detector()
    report = {
        "clip": f"{CLIP.name}: {len(frames)} frames, {frames[0].shape[1]}x{frames[0].shape[0]}",
        "backends": service.backends, "model": settings.DETECTOR_MODEL,
        "precision": detector.precision, "batch": settings.VIDEO_BATCH_SIZE,
        "frames_per_second": medians, "rounds": runs,
        "pmr_vs_engine": medians["pmr_end_to_end"] / medians["engine_batched"],
        "pmr_vs_opencv_loop": medians["pmr_end_to_end"] / medians["opencv_dnn_loop"],
        "memory_1080p": memory,
    }
    for name, value in medians.items():
        print(f"{name:<20}{value:8.1f} frames/s")
    print(f"{'PMR / engine':<20}{report['pmr_vs_engine']:8.2f}   (target >= 0.8)")
    print(f"{'PMR / OpenCV loop':<20}{report['pmr_vs_opencv_loop']:8.2f}   (target >= 4)")
    if memory:
        print(f"worker peak memory on {memory['video']}: {memory['worker_peak_rss_mb']:.0f} MB "
              f"(before: {memory['worker_rss_before_mb']:.0f} MB; target < 1536)")
    print(json.dumps(report, indent=2))
    Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json_out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
