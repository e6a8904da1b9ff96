"""What the job page's script reads, as JSON: the job and its media, the frames that have
detections, one frame's boxes, a range of frames' boxes (to draw over a playing video),
the review history, and the jobs before and after it in the list.

Served under the JobAdmin's URLs with its view permission; every answer costs a fixed
number of queries whatever the number of detections (tested with 100,000).
"""

from __future__ import annotations

from django.db.models import Exists, OuterRef
from django.http import Http404, JsonResponse
from django.urls import path, reverse

from engine.annotate import PALETTE
from jobs import selectors as job_selectors
from jobs.models import Detection, Job
from review import dashboard
from review.models import AddedBox, ReviewEvent
from review.views import visible_job

# Boxes one frame's answer holds at most (a frame with more is a runaway model).
FRAME_DETECTION_LIMIT = 500
# Boxes a range answer holds at most: the script asks for a few seconds of video at once.
RANGE_DETECTION_LIMIT = 5000
HISTORY_EVENTS = 50


def _user(user) -> str | None:
    return user.get_username() if user is not None else None


def detection_json(d: Detection) -> dict:
    return {"id": d.pk, "frame_index": d.frame_index, "timestamp_ms": d.timestamp_ms,
            "class_id": d.class_id, "label": d.label, "confidence": d.confidence,
            "box": [d.x1, d.y1, d.x2, d.y2], "review_status": d.review_status,
            "review_label": d.review_label or None, "review_class_id": d.review_class_id,
            "reviewed_by": _user(d.reviewed_by),
            "reviewed_at": d.reviewed_at.isoformat() if d.reviewed_at else None,
            "track_id": d.track_id}


def box_json(b: AddedBox) -> dict:
    return {"id": b.pk, "frame_index": b.frame_index, "class_id": b.class_id,
            "label": b.label, "box": [b.x1, b.y1, b.x2, b.y2],
            "created_by": _user(b.created_by), "removed": b.removed_at is not None}


def event_json(e: ReviewEvent) -> dict:
    after = (e.details or {}).get("after") or {}
    return {"at": e.created_at.isoformat(), "user": _user(e.user), "action": e.action,
            "detection": e.detection_id, "box": e.added_box_id,
            "label": (e.detection.label if e.detection else None)
            or (e.added_box.label if e.added_box else None),
            "new_label": after.get("label"), "track": _track_change(e)}


def _track_change(e: ReviewEvent) -> str | None:
    """A track event in words: "#5 into #2", "#2 from frame 40: #6"; a box's track."""
    details = e.details or {}
    if e.action == ReviewEvent.Action.MERGE_TRACKS:
        return f"#{details.get('track_id')} into #{details.get('into')}"
    if e.action == ReviewEvent.Action.SPLIT_TRACK:
        return (f"#{details.get('track_id')} from frame {details.get('frame_index')}: "
                f"#{details.get('new_track_id')}")
    return f"track #{details['track_id']}" if details.get("track_id") else None


def _detections(job: Job):
    return Detection.objects.filter(job=job).select_related("reviewed_by").order_by(
        "frame_index", "-confidence", "id")


def _added(job: Job):
    return AddedBox.objects.filter(job=job, removed_at__isnull=True).select_related(
        "created_by").order_by("frame_index", "id")


def neighbours(job: Job) -> dict:
    """The jobs of the same kind just after and before this one in the job list (newest
    first) that have detections to review: where ``n`` and ``p`` go from an image."""
    found = Exists(Detection.objects.filter(job=OuterRef("pk")))
    same = Job.objects.filter(found, kind=job.kind).only("id")
    after = same.filter(created_at__lt=job.created_at).order_by("-created_at", "-id").first()
    before = same.filter(created_at__gt=job.created_at).order_by("created_at", "id").first()

    def url(other):
        return reverse("admin:jobs_job_change", args=[other.pk]) if other else None
    return {"next": url(after), "previous": url(before)}


class ReviewData:
    """The endpoints, under the JobAdmin's URLs and with its permission checks."""

    def __init__(self, model_admin) -> None:
        self.admin = model_admin

    def urls(self) -> list:
        view = self.admin.admin_site.admin_view
        return [
            path("<uuid:job_id>/review/data", view(self.job_data), name="jobs_job_data"),
            path("<uuid:job_id>/review/frame/<int:frame_index>", view(self.frame_data),
                 name="jobs_job_frame_data"),
            path("<uuid:job_id>/review/boxes", view(self.range_data), name="jobs_job_boxes"),
            path("<uuid:job_id>/review/history", view(self.history),
                 name="jobs_job_review_history"),
        ]

    def job_data(self, request, job_id):
        job = visible_job(self.admin, request, job_id)
        return JsonResponse(page_data(job, can_change=self.admin.has_change_permission(
            request, job)))

    def frame_data(self, request, job_id, frame_index: int):
        return JsonResponse(frame_answer(visible_job(self.admin, request, job_id), frame_index))

    def range_data(self, request, job_id):
        job = visible_job(self.admin, request, job_id)
        try:
            start = int(request.GET.get("from", "0"))
            end = int(request.GET.get("to", "0"))
        except ValueError:
            raise Http404 from None
        rows = list(_detections(job).filter(frame_index__gte=start, frame_index__lt=end)
                    [:RANGE_DETECTION_LIMIT + 1])
        until = end
        if len(rows) > RANGE_DETECTION_LIMIT:
            # Cut at whole frames (the last one may be incomplete), so that the script knows
            # where to go on from; never less than one frame.
            until = max(rows[-1].frame_index, start + 1)
            rows = [d for d in rows[:RANGE_DETECTION_LIMIT] if d.frame_index < until]
        added = _added(job).filter(frame_index__gte=start, frame_index__lt=until)
        return JsonResponse({"from": start, "to": until,
                             "detections": [detection_json(d) for d in rows],
                             "added": [box_json(b) for b in added]})

    def history(self, request, job_id):
        job = visible_job(self.admin, request, job_id)
        events = ReviewEvent.objects.filter(job=job).select_related(
            "user", "detection", "added_box")[:HISTORY_EVENTS]
        return JsonResponse({"events": [event_json(e) for e in events]})


def frame_answer(job: Job, frame_index: int) -> dict:
    """One frame's boxes (an image's: frame 0), best first."""
    detections = _detections(job).filter(frame_index=frame_index)[:FRAME_DETECTION_LIMIT]
    return {"frame": frame_index, "detections": [detection_json(d) for d in detections],
            "added": [box_json(b) for b in _added(job).filter(frame_index=frame_index)]}


def page_data(job: Job, *, can_change: bool) -> dict:
    """Everything the page needs that does not change as the reviewer works."""
    pk = job.pk
    data: dict = {
        "job": {"id": str(pk), "kind": job.kind, "status": job.status, "width": job.width,
                "height": job.height, "model": job.model_name,
                "min_confidence": job.params.get("min_confidence"),
                "original_filename": job.original_filename},
        "names": dashboard.class_names_of(job),
        "palette": list(PALETTE),
        "can_change": can_change,
        "neighbours": neighbours(job),
        "urls": {
            "page": reverse("admin:jobs_job_change", args=[pk]),
            "frame_data": reverse("admin:jobs_job_frame_data", args=[pk, 0])[:-1],
            "boxes": reverse("admin:jobs_job_boxes", args=[pk]),
            "history": reverse("admin:jobs_job_review_history", args=[pk]),
            "detection": reverse("admin:jobs_job_confirm", args=[pk, 0]).rsplit("/0/", 1)[0],
            "add_box": reverse("admin:jobs_job_add_box", args=[pk]),
            "mark_reviewed": reverse("admin:jobs_job_mark_reviewed", args=[pk]),
        },
    }
    if job.kind == Job.Kind.IMAGE:
        data["media"] = {"image": reverse("admin:jobs_job_input", args=[pk])}
        data["frames"] = [0]
        return data
    video = job.video
    data["job"].update(fps=video.fps, frame_count=video.frame_count,
                       duration_ms=video.duration_ms, frames_done=video.frames_done,
                       frames_total=video.frames_total,
                       frame_interval_ms=job_selectors.frame_interval_ms(job))
    data["media"] = {
        "video": reverse("admin:jobs_job_input", args=[pk]),
        "frame": reverse("admin:jobs_job_frame", args=[pk, 0])[:-1],
        "annotated": reverse("admin:jobs_job_annotated", args=[pk])
        if video.annotated_file else None}
    frames = Detection.objects.filter(job=job).values_list("frame_index", flat=True)
    data["frames"] = sorted(set(frames.order_by().distinct()))
    data["lanes"] = lanes(job)
    data["tracks"] = track_lanes(job)
    data["urls"]["track"] = reverse("admin:jobs_job_track_merge", args=[pk, 0]).rsplit(
        "/0/", 1)[0]
    data["urls"]["data"] = reverse("admin:jobs_job_data", args=[pk])
    return data


# The timeline shows at most this many tracks (the longest), one lane each.
TRACK_LANES = 40


def track_lanes(job: Job) -> list[dict]:
    """The timeline's tracks: the longest TRACK_LANES, by when they start."""
    tracks = job_selectors.job_tracks(job=job)
    longest = sorted(tracks.order_by("-duration_ms", "track_id")[:TRACK_LANES],
                     key=lambda t: (t.first_ms, t.track_id))
    return [{"track_id": t.track_id, "label": t.label, "class_id": t.class_id,
             "first_ms": t.first_ms, "last_ms": t.last_ms, "first_frame": t.first_frame,
             "frames": t.frames} for t in longest]


def lanes(job: Job) -> list[dict]:
    """The timeline: per label (most seen first), its class and when it is present."""
    segments = job_selectors.label_segments(detections=Detection.objects.filter(job=job),
                                            gap_ms=job_selectors.default_gap_ms(job))
    summary = {row["label"]: row for row in job_selectors.label_summary(job=job)}
    class_of = dict(Detection.objects.filter(job=job).values_list("label", "class_id")
                    .order_by().distinct())
    by_label: dict[str, list] = {label: [] for label in summary}
    for s in segments:
        by_label[s["label"]].append([s["start_ms"], s["end_ms"], s["frames"]])
    return [{"label": label, "class_id": class_of.get(label, 0),
             "count": summary[label]["count"], "segments": by_label[label]}
            for label in summary]
