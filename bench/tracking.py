"""What tracking costs and what it finds: video jobs with tracking=true against
tracking=false, end to end, and the tracks of every shared clip.

Starts PMR for real (gunicorn + one Celery worker; Redis from REDIS_URL, default
redis://127.0.0.1:6379/0; DATABASE_URL when set, else SQLite). Rounds alternate the two
runs (which goes first alternates too) on intel_one-by-one-person-detection.mp4 (768x432,
1394 frames); figures are medians of frames / seconds from the upload to the job's finish,
and of the tracked job's own time spent tracking (timing.tracking_ms) over its total.
Then each shared clip once with tracking: its tracks per label, next to the most boxes of
a label in one frame. Frames of the annotated clip (ids and trails drawn) are written to
bench/results/tracking/ to be looked at. Prints a table and JSON.

    python bench/tracking.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pmr.settings")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")

import django  # noqa: E402

django.setup()

import cv2  # noqa: E402

from bench.machine import cpuinfo  # noqa: E402
from bench.video_throughput import pmr_fps  # noqa: E402
from tests.integration.service import Service  # noqa: E402

VIDEOS = ROOT.parent / "shared" / "testdata" / "videos"
CLIP = VIDEOS / "intel_one-by-one-person-detection.mp4"
RESULTS = ROOT / "bench" / "results"


def tracks_of(service: Service, job: dict) -> list[dict]:
    tracks, url = [], job["tracks_url"]
    while url:
        page = service.get(url).json()
        tracks += page["results"]
        url = page["next"]
    return tracks


def most_in_one_frame(service: Service, job: dict) -> Counter:
    """Per label, the most boxes of it in one frame (what a per-frame count would say)."""
    per_frame: Counter = Counter()
    url = job["detections_url"] + "?page_size=5000"
    while url:
        page = service.get(url).json()
        per_frame.update((row["frame_index"], row["label"]) for row in page["results"])
        url = page["next"]
    most: Counter = Counter()
    for (_, label), count in per_frame.items():
        most[label] = max(most[label], count)
    return most


def save_frames(service: Service, job: dict, target: Path, every: int = 100) -> list[str]:
    target.mkdir(parents=True, exist_ok=True)
    response = service.get(job["annotated_url"])
    for _ in range(120):
        if response.status_code == 200:
            break
        time.sleep(2)
        response = service.get(job["annotated_url"])
    video = target / "annotated.mp4"
    video.write_bytes(response.content)
    capture = cv2.VideoCapture(str(video))
    written, index = [], 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        if index % every == 0:
            name = target / f"frame{index:05d}.jpg"
            cv2.imwrite(str(name), frame)
            written.append(name.name)
        index += 1
    capture.release()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json-out", default=str(RESULTS / "tracking.json"))
    args = parser.parse_args()
    if not CLIP.exists():
        sys.exit(f"{CLIP} is absent: this benchmark needs ../shared/testdata/videos")
    service = Service.create(Path(tempfile.mkdtemp(prefix="pmr-bench-tracking-")))
    runs: dict[str, list[float]] = {"tracking": [], "no_tracking": []}
    shares: list[float] = []  # the job's own time spent tracking, of its submit-to-finish
    clips = {}
    try:
        service.start_worker(concurrency=4)
        service.start_web()
        service.wait_ready()
        pmr_fps(service, VIDEOS / "intel_people-detection_from_gif.mp4")  # warm-up
        for round_number in range(args.rounds):
            order = ["tracking", "no_tracking"][::1 if round_number % 2 == 0 else -1]
            for name in order:
                fps, job = pmr_fps(service, CLIP, tracking=str(name == "tracking").lower())
                runs[name].append(fps)
                if name == "tracking":
                    shares.append(job["timing"]["tracking_ms"] / job["timing"]["total_ms"])
            print(f"round {round_number + 1}/{args.rounds}: "
                  + ", ".join(f"{k} {v[-1]:.2f} fps" for k, v in runs.items()), file=sys.stderr)
        for path in sorted(VIDEOS.glob("*.mp4")):
            _, job = pmr_fps(service, path, annotate="true")
            tracks = tracks_of(service, job)
            clips[path.name] = {
                "frames": job["progress"]["frames_done"],
                "tracks_per_label": dict(Counter(t["label"] for t in tracks).most_common()),
                "tracks_over_1s_per_label": dict(Counter(
                    t["label"] for t in tracks if t["duration_ms"] >= 1000).most_common()),
                "most_boxes_in_one_frame": dict(most_in_one_frame(service, job).most_common()),
            }
            if path == CLIP:
                clips[path.name]["frames_saved"] = save_frames(service, job,
                                                               RESULTS / "tracking")
    finally:
        service.close()
    medians = {name: statistics.median(values) for name, values in runs.items()}
    machine = {"cpu": cpuinfo("model name"), "cpu_family": cpuinfo("cpu family"),
               "cpu_model": cpuinfo("model"), "cores": os.cpu_count()}
    report = {"machine": machine, "clip": CLIP.name, "backends": service.backends,
              "frames_per_second": medians, "rounds": runs,
              "tracking_vs_none": medians["tracking"] / medians["no_tracking"],
              "tracking_share_of_job": statistics.median(shares), "tracking_shares": shares,
              "clips": clips}
    print(f"{'':<34}{'frames/s':>10}")
    for name, value in medians.items():
        print(f"{name:<34}{value:10.2f}")
    print(f"{'tracking / no tracking':<34}{report['tracking_vs_none']:10.3f}   (target >= 0.95)")
    print(f"{'tracking, of the tracked job':<34}{100 * report['tracking_share_of_job']:9.2f}%"
          "  (its own timing.tracking_ms / total_ms)")
    for name, clip in clips.items():
        print(f"{name}: tracks {clip['tracks_per_label']}; >= 1 s "
              f"{clip['tracks_over_1s_per_label']}; most in a frame "
              f"{clip['most_boxes_in_one_frame']}")
    print(json.dumps(report, indent=2))
    Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json_out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
