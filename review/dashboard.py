"""What the dashboard's pages show, computed from the records: the frame a job's page opens
on, and the overview's series and charts (server-side SVG with pygal, so the page needs no
script and no chart code is kept in the repository)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pygal
from django.db.models import Count, F, Sum
from django.db.models.functions import TruncHour
from django.utils import timezone
from pygal.style import Style

from core.errors import ApiError
from engine.annotate import PALETTE
from jobs.catalog import class_names, job_ref
from jobs.models import Detection, Job
from review.models import ReviewEvent, ReviewMark

CHART_STYLE = Style(background="white", plot_background="white", foreground="#222",
                    foreground_strong="#111", foreground_subtle="#666", colors=PALETTE,
                    font_family="sans-serif", label_font_size=12, major_label_font_size=12,
                    legend_font_size=12, title_font_size=14, value_font_size=11)


def class_names_of(job: Job) -> list[str]:
    try:
        return list(class_names(job_ref(job)))
    except (OSError, ApiError):  # its model is gone
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


def _hours(now: datetime, hours: int) -> list[datetime]:
    # Truncated in the current time zone, as TruncHour does.
    last = timezone.localtime(now).replace(minute=0, second=0, microsecond=0)
    return [last - timedelta(hours=h) for h in range(hours - 1, -1, -1)]


def per_hour(now: datetime, hours: int = 48) -> dict:
    """Per hour: jobs created by kind, video frames processed and the frames/s they ran at
    (the videos that finished in that hour)."""
    since = now - timedelta(hours=hours)
    slots = _hours(now, hours)
    created = (Job.objects.filter(created_at__gte=since).annotate(hour=TruncHour("created_at"))
               .values("hour", "kind").annotate(n=Count("id")).order_by())
    jobs = {kind: dict.fromkeys(slots, 0) for kind in Job.Kind.values}
    for row in created:
        if row["hour"] in jobs[row["kind"]]:
            jobs[row["kind"]][row["hour"]] = row["n"]
    videos = (Job.objects.filter(kind=Job.Kind.VIDEO, finished_at__gte=since)
              .annotate(hour=TruncHour("finished_at")).values("hour")
              .annotate(frames=Sum("video__frames_done"), ms=Sum("video__processing_ms"))
              .order_by())
    frames = dict.fromkeys(slots, 0)
    rate: dict = dict.fromkeys(slots)
    for row in videos:
        if row["hour"] in frames:
            frames[row["hour"]] = row["frames"] or 0
            rate[row["hour"]] = (round(row["frames"] / (row["ms"] / 1000), 1)
                                 if row["frames"] and row["ms"] else None)
    return {"hours": slots, "jobs": {k: list(v.values()) for k, v in jobs.items()},
            "frames": list(frames.values()), "frames_per_second": list(rate.values())}


def review_progress(since: datetime) -> dict:
    """Succeeded jobs marked reviewed out of all succeeded, and each reviewer's changes."""
    succeeded = Job.objects.filter(status=Job.Status.SUCCEEDED)
    reviewers = (ReviewEvent.objects.filter(created_at__gte=since, user__isnull=False)
                 .values(name=F("user__username")).annotate(n=Count("id")).order_by("-n")[:10])
    return {"total": succeeded.count(),
            "reviewed": ReviewMark.objects.filter(job__status=Job.Status.SUCCEEDED).count(),
            "reviewers": [(row["name"], row["n"]) for row in reviewers]}


def _render(chart) -> str:
    return chart.render(is_unicode=True)


def _whole_numbers(values) -> list[int]:
    """Counts on a y axis: whole numbers, about five of them."""
    top = max([v or 0 for v in values], default=0)
    step = max(1, -(-top // 5))
    return list(range(0, top + step + 1, step))


def _chart(kind, title: str, **options):
    settings = {"width": 720, "height": 300, "show_legend": True, "legend_at_bottom": True,
                "no_data_text": "nothing yet", "truncate_label": -1, **options}
    return kind(style=CHART_STYLE, title=title, js=[], disable_xml_declaration=True,
                explicit_size=False, print_values=False, **settings)


def overview_charts(*, hourly: dict, labels: list[tuple[str, int]], progress: dict,
                    queue: dict[str, int]) -> dict[str, str]:
    """The overview's charts, as SVG markup to put in the page."""
    # One label every 6 hours (the day where it starts), the other hours unlabelled.
    stamps = [(f"{h:%d %b}" if not h.hour else f"{h:%H}:00") if not h.hour % 6 else ""
              for h in hourly["hours"]]
    totals = [sum(counts) for counts in zip(*hourly["jobs"].values(), strict=True)]
    jobs = _chart(pygal.StackedBar, "Jobs submitted per hour (last 48 h)", x_labels=stamps,
                  y_labels=_whole_numbers(totals))
    for kind, counts in hourly["jobs"].items():
        jobs.add(f"{kind}s", counts)
    frames = _chart(pygal.Bar, "Video frames processed per hour, and frames/s",
                    x_labels=stamps, y_labels=_whole_numbers(hourly["frames"]),
                    secondary_range=(0, max([v or 0 for v in hourly["frames_per_second"]],
                                            default=0) * 1.2 or 1))
    frames.add("frames", hourly["frames"])
    frames.add("frames/s", hourly["frames_per_second"], secondary=True)
    per_label = _chart(pygal.HorizontalBar, "Detections per label (last 30 days)",
                       show_legend=False)
    per_label.x_labels = [name for name, _ in labels][::-1]
    per_label.add("detections", [n for _, n in labels][::-1])
    reviewed = _chart(pygal.HorizontalStackedBar,
                      f"Review progress: {progress['reviewed']} of {progress['total']} "
                      "succeeded jobs reviewed", height=160)
    reviewed.x_labels = ["jobs"]
    reviewed.add("reviewed", [progress["reviewed"]])
    reviewed.add("waiting", [max(0, progress["total"] - progress["reviewed"])])
    people = _chart(pygal.HorizontalBar, "Review changes per reviewer (last 30 days)",
                    show_legend=False)
    people.x_labels = [name for name, _ in progress["reviewers"]][::-1]
    people.add("changes", [n for _, n in progress["reviewers"]][::-1])
    depth = _chart(pygal.Bar, "Work waiting now", show_legend=False,
                   y_labels=_whole_numbers(queue.values()))
    depth.x_labels = list(queue)
    depth.add("count", list(queue.values()))
    return {"jobs": _render(jobs), "frames": _render(frames), "labels": _render(per_label),
            "reviewed": _render(reviewed), "reviewers": _render(people),
            "queue": _render(depth)}


def score_table(result: dict) -> dict:
    """A scoring's result as the scores page shows it: one column per model, one row per
    measure, then per class (a class a model lacks is said, not left out)."""
    models = result.get("models", [])

    def percent(value) -> str:
        return "-" if value is None else f"{100 * value:.1f}"

    rows = [("images scored", [str(m["images"]) for m in models]),
            ("mAP@0.5", [percent(m["map50"]) for m in models]),
            ("mAP@0.5:0.95", [percent(m["map50_95"]) for m in models]),
            ("mAP@0.5, classes it has", [percent(m["shared_map50"]) for m in models]),
            (f"precision at {result.get('threshold')}", [percent(m["precision"]) for m in models]),
            (f"recall at {result.get('threshold')}", [percent(m["recall"]) for m in models]),
            ("runtime, precision", [f"{m['runtime']}, {m['precision']}" for m in models])]
    classes = []
    for name in result.get("dataset", {}).get("classes", []):
        cells = []
        for m in models:
            row = next((r for r in m["per_class"] if r["class"] == name), None)
            if row is None or not row["known_to_model"]:
                cells.append("not a class of this model")
            else:
                cells.append(f"{percent(row['ap50'])} / {percent(row['ap50_95'])}")
        classes.append((name, cells))
    return {"models": [m["model"] for m in models], "rows": rows, "classes": classes,
            "outside": [(m["model"], m["detections_outside_ground_truth"]) for m in models
                        if m["detections_outside_ground_truth"]],
            "dataset": result.get("dataset", {})}
