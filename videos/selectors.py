"""Reads for video jobs: filtered detections, per-label summary, presence segments."""

from __future__ import annotations

from django.db.models import Count, Max, Min, QuerySet

from detection.models import Detection, Job


def video_detections(*, job: Job, label: str | None = None, min_confidence: float | None = None,
                     frame_from: int | None = None, frame_to: int | None = None,
                     t_from_ms: int | None = None, t_to_ms: int | None = None
                     ) -> QuerySet[Detection]:
    """A job's detections, by frame then confidence; bounds are inclusive."""
    rows = Detection.objects.filter(job=job)
    if label:
        rows = rows.filter(label=label)
    if min_confidence is not None:
        rows = rows.filter(confidence__gte=min_confidence)
    if frame_from is not None:
        rows = rows.filter(frame_index__gte=frame_from)
    if frame_to is not None:
        rows = rows.filter(frame_index__lte=frame_to)
    if t_from_ms is not None:
        rows = rows.filter(timestamp_ms__gte=t_from_ms)
    if t_to_ms is not None:
        rows = rows.filter(timestamp_ms__lte=t_to_ms)
    return rows.order_by("frame_index", "-confidence", "id")


def label_summary(*, job: Job) -> list[dict]:
    """Per label: count, best confidence, first and last timestamp; most frequent first."""
    rows = (Detection.objects.filter(job=job).values("label")
            .annotate(count=Count("id"), max_confidence=Max("confidence"),
                      first_ms=Min("timestamp_ms"), last_ms=Max("timestamp_ms"))
            .order_by("-count", "label"))
    return [{"label": r["label"], "count": r["count"],
             "max_confidence": round(r["max_confidence"], 6), "first_ms": r["first_ms"],
             "last_ms": r["last_ms"]} for r in rows]


def label_segments(*, job: Job, gap_ms: int, label: str | None = None,
                   min_confidence: float | None = None) -> list[dict]:
    """Per label, the intervals [start_ms, end_ms] in which it is present.

    Consecutive frames where the label is detected belong to one segment while the time
    between them is at most ``gap_ms`` (the gap tolerance): like Rekognition's SEGMENTS
    aggregation, short misses do not split a segment.
    """
    rows = Detection.objects.filter(job=job)
    if label:
        rows = rows.filter(label=label)
    if min_confidence is not None:
        rows = rows.filter(confidence__gte=min_confidence)
    presence = (rows.values("label", "timestamp_ms").annotate(best=Max("confidence"),
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
