"""Reads for video jobs: filtered detections, per-label summary, presence segments."""

from __future__ import annotations

from django.db.models import Count, Max, Min, QuerySet

from detection.models import Detection, Job
from videos.pipeline import FrameSelection


def selection_for(job: Job) -> FrameSelection:
    """The frames a video job processes, from its parameters."""
    return FrameSelection(fps=job.fps or 25, stride=job.params.get("frame_stride") or 1,
                          sample_fps=job.params.get("sample_fps"))


def frame_interval_ms(job: Job) -> float:
    """Milliseconds between the job's processed frames (frame_stride or sample_fps)."""
    return selection_for(job).interval_ms


def default_gap_ms(job: Job) -> int:
    """Segments: absences shorter than two processed frames do not split a presence."""
    return round(2 * frame_interval_ms(job))


def video_detections(*, job: Job) -> QuerySet[Detection]:
    """A job's detections, by frame then confidence (filtered by ``videos.filters``)."""
    return Detection.objects.filter(job=job).order_by("frame_index", "-confidence", "id")


def label_summary(*, job: Job) -> list[dict]:
    """Per label: count, best confidence, first and last timestamp; most frequent first."""
    rows = (Detection.objects.filter(job=job).values("label")
            .annotate(count=Count("id"), max_confidence=Max("confidence"),
                      first_ms=Min("timestamp_ms"), last_ms=Max("timestamp_ms"))
            .order_by("-count", "label"))
    return [{"label": r["label"], "count": r["count"],
             "max_confidence": round(r["max_confidence"], 6), "first_ms": r["first_ms"],
             "last_ms": r["last_ms"]} for r in rows]


def label_segments(*, detections: QuerySet[Detection], gap_ms: int) -> list[dict]:
    """Per label, the intervals [start_ms, end_ms] in which it is present.

    Consecutive frames where the label is detected belong to one segment while the time
    between them is at most ``gap_ms`` (the gap tolerance): like Rekognition's SEGMENTS
    aggregation, short misses do not split a segment. ``detections``: a job's, filtered.
    """
    presence = (detections.values("label", "timestamp_ms").annotate(best=Max("confidence"),
                                                              instances=Count("id"))
                .order_by("label", "timestamp_ms"))
    segments: list[dict] = []
    current: dict | None = None
    for row in presence.iterator(chunk_size=10_000):
        if current and row["label"] == current["label"] and \
                row["timestamp_ms"] - current["end_ms"] <= gap_ms:
            current["end_ms"] = row["timestamp_ms"]
            current["frames"] += 1
            current["max_confidence"] = max(current["max_confidence"], row["best"])
            continue
        current = {"label": row["label"], "start_ms": row["timestamp_ms"],
                   "end_ms": row["timestamp_ms"], "frames": 1, "max_confidence": row["best"]}
        segments.append(current)
    for segment in segments:
        segment["duration_ms"] = segment["end_ms"] - segment["start_ms"]
        segment["max_confidence"] = round(segment["max_confidence"], 6)
    return sorted(segments, key=lambda s: (s["start_ms"], s["label"]))
