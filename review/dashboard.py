"""What the dashboard's pages show, computed from the records: the boxes over an image or a
frame, a video's timeline, the frame to show, the overview's days. The pages' markup (SVG
included) is in the templates."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Count, F
from django.db.models.functions import TruncDate

from engine.annotate import label_colour
from jobs import selectors as job_selectors
from jobs.catalog import class_names
from jobs.models import Detection, Job

TIMELINE_BUCKETS = 120
TIMELINE_LABELS = 8


def css_colour(class_id: int) -> str:
    red, green, blue = label_colour(class_id)
    return f"rgb({red},{green},{blue})"


def class_names_of(job: Job) -> list[str]:
    try:
        return list(class_names(job.model_name))
    except OSError:
        return []


def chosen_frame(job: Job, wanted: str) -> int:
    """The frame a video's page shows: the one asked for, else the busiest."""
    if job.kind != Job.Kind.VIDEO:
        return 0
    try:
        frame = int(wanted)
    except ValueError:
        frame = None
    if frame is not None and 0 <= frame < (job.video.frame_count or 1):
        return frame
    busiest = (Detection.objects.filter(job=job).values("frame_index")
               .annotate(n=Count("id")).order_by("-n", "frame_index").first())
    return busiest["frame_index"] if busiest else 0



@dataclass(frozen=True)
class Box:
    """One box as the overlay draws it."""

    kind: str  # "detection" or "added"
    pk: int
    x: float
    y: float
    width: float
    height: float
    colour: str
    text: str
    text_x: float = 0
    text_y: float = 0
    status: str = ""
    rejected: bool = False


def overlay(job: Job, detections, added, image_url: str) -> dict:
    """The picture with its boxes (templates/admin/jobs/job/overlay.html draws them): model
    boxes (dashed when rejected, with the new label when relabelled) and added boxes."""
    width, height = job.width or 1, job.height or 1
    stroke = max(1.5, min(width, height) / 250)
    font = max(10.0, min(width, height) / 40)
    boxes = []
    for d in detections:
        relabelled = d.review_status == Detection.Review.RELABELLED
        label = d.review_label if relabelled else d.label
        mark = {"confirmed": " ✓", "rejected": " ✗", "relabelled": f" (was {d.label})"}.get(
            d.review_status, "")
        boxes.append(Box("detection", d.pk, d.x1, d.y1, d.x2 - d.x1, d.y2 - d.y1,
                         css_colour(d.review_class_id if relabelled else d.class_id),
                         f"{label} {d.confidence:.2f}{mark}", d.x1 + 2, max(font, d.y1 - 3),
                         d.review_status, d.review_status == Detection.Review.REJECTED))
    boxes += [Box("added", b.pk, b.x1, b.y1, b.x2 - b.x1, b.y2 - b.y1, css_colour(b.class_id),
                  f"+ {b.label}", b.x1 + 2, max(font, b.y1 - 3)) for b in added]
    return {"width": width, "height": height, "image_url": image_url, "boxes": boxes,
            "stroke": stroke, "added_stroke": 2 * stroke, "font": font, "outline": font / 8}


def timeline(job: Job) -> dict | None:
    """Detections per label over time (bucketed), as SVG polylines with clickable
    columns that choose the frame shown."""
    duration = max(job.video.duration_ms or 0, 1)
    # Never finer than the processed frames, or the lines fall to zero between them.
    frame_ms = job_selectors.frame_interval_ms(job)
    bucket_ms = max(1, -(-duration // TIMELINE_BUCKETS), -(-round(frame_ms) // 1))
    top = list(Detection.objects.filter(job=job).values("label", "class_id")
               .annotate(n=Count("id")).order_by("-n")[:TIMELINE_LABELS])
    if not top:
        return None
    labels = [row["label"] for row in top]
    rows = (Detection.objects.filter(job=job, label__in=labels)
            .annotate(bucket=F("timestamp_ms") / bucket_ms)
            .values("label", "bucket").annotate(n=Count("id")))
    series: dict[str, dict[int, int]] = {label: {} for label in labels}
    for row in rows:
        series[row["label"]][int(row["bucket"])] = row["n"]
    peak = max((n for values in series.values() for n in values.values()), default=1)
    buckets = -(-duration // bucket_ms)
    width, height = 960, 160
    step = width / buckets
    lines = []
    for row in top:
        values = series[row["label"]]
        scale = (height - 16) / peak
        points = " ".join(f"{(b + 0.5) * step:.1f},{height - 8 - scale * values.get(b, 0):.1f}"
                          for b in range(buckets))
        lines.append({"label": row["label"], "colour": css_colour(row["class_id"]),
                      "points": points, "count": row["n"]})
    columns = [{"x": b * step, "frame": int(b * bucket_ms * (job.video.fps or 25) / 1000),
                "time": f"{b * bucket_ms / 1000:.1f}"} for b in range(buckets)]
    return {"width": width, "height": height, "step": step, "lines": lines,
            "columns": columns, "peak": peak, "bucket_ms": bucket_ms}


def jobs_per_day(since) -> list[dict]:
    """Jobs created per day and kind since a moment, with each day's share of the peak."""
    per_day = (Job.objects.filter(created_at__gte=since).annotate(day=TruncDate("created_at"))
               .values("day", "kind").annotate(n=Count("id")).order_by("day"))
    days: dict = {}
    for row in per_day:
        days.setdefault(row["day"], {"image": 0, "video": 0})[row["kind"]] = row["n"]
    peak = max((sum(v.values()) for v in days.values()), default=1)
    return [{"day": day, "image": v["image"], "video": v["video"],
             "total": v["image"] + v["video"],
             "percent": round(100 * (v["image"] + v["video"]) / peak)}
            for day, v in sorted(days.items())]
