"""Reads: the jobs and detections a caller may see, a video job's summary and presence
segments, and the service's throughput."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Avg, Count, Max, Min, QuerySet, Sum
from django.http import Http404

from jobs.frames import FrameSelection
from jobs.models import Detection, Job, Track, WorkerHeartbeat


@dataclass(frozen=True)
class Throughput:
    """What the jobs that finished since a moment say about the service's speed."""

    images_done: int
    image_inference_ms: float | None  # mean, succeeded image jobs
    image_total_ms: float | None  # mean submit-to-result
    video_frames_per_second: float | None  # frames processed / processing time, all videos


def throughput(*, since: datetime) -> Throughput:
    images = Job.objects.filter(kind=Job.Kind.IMAGE, status=Job.Status.SUCCEEDED,
                                finished_at__gte=since).aggregate(
        inference=Avg("inference_ms"), total=Avg("total_ms"), n=Count("id"))
    videos = Job.objects.filter(kind=Job.Kind.VIDEO, finished_at__gte=since).aggregate(
        frames=Sum("video__frames_done"), ms=Sum("video__processing_ms"))
    fps = videos["frames"] / (videos["ms"] / 1000) if videos["frames"] and videos["ms"] else None
    return Throughput(images_done=images["n"], image_inference_ms=images["inference"],
                      image_total_ms=images["total"], video_frames_per_second=fps)


@dataclass(frozen=True)
class ServiceState:
    """The deployment now, as /metrics and the dashboard's overview show it."""

    jobs: dict[tuple[str, str], int]  # (kind, status) -> jobs
    live_workers: list[WorkerHeartbeat]
    recent: Throughput

    def count(self, *, kind: str | None = None, status: str | None = None) -> int:
        return sum(n for (k, st), n in self.jobs.items()
                   if kind in (None, k) and status in (None, st))


def service_state(*, now: datetime, recent: timedelta) -> ServiceState:
    """Jobs by kind and status, the workers with a recent heartbeat, and the throughput of
    the jobs finished within ``recent``."""
    rows = Job.objects.values("kind", "status").annotate(n=Count("id")).order_by()
    stale = now - timedelta(seconds=settings.WORKER_STALE_SECONDS)
    return ServiceState(
        jobs={(row["kind"], row["status"]): row["n"] for row in rows},
        live_workers=list(WorkerHeartbeat.objects.filter(last_seen__gte=stale)
                          .order_by("hostname")),
        recent=throughput(since=now - recent))


def jobs_visible_to(user) -> QuerySet[Job]:
    """A user's own jobs; anonymous callers (when allowed) share the owner-less ones."""
    jobs = Job.objects.select_related("video", "webhook")
    if user is None or not user.is_authenticated:
        return jobs.filter(owner__isnull=True)
    return jobs.filter(owner=user)


def recent_image_inputs(*, count: int) -> list[str]:
    """The stored input files of the ``count`` most recent succeeded image jobs, newest
    first (jobs whose file retention removed have none): the images users actually send,
    for calibrating an INT8 model."""
    names = (Job.objects.filter(kind=Job.Kind.IMAGE, status=Job.Status.SUCCEEDED)
             .exclude(input_file="").order_by("-created_at")
             .values_list("input_file", flat=True)[:count])
    return [str(name) for name in names]


def job_list(*, user) -> QuerySet[Job]:
    """The caller's jobs, newest first (filtered by ``jobs.filters.JobFilter``)."""
    return jobs_visible_to(user).annotate(detection_count=Count("detections")).order_by(
        "-created_at")


def job_get(*, user, job_id) -> Job:
    """The job, if the user may see it; another user's job is a 404, like a missing one."""
    job = jobs_visible_to(user).filter(pk=job_id).first()
    if job is None:
        raise Http404("no such job")
    return job


def job_detections(*, job: Job) -> QuerySet[Detection]:
    """A job's detections, by frame then confidence (filtered by ``jobs.filters``)."""
    return Detection.objects.filter(job=job).order_by("frame_index", "-confidence", "id")


def selection_for(job: Job) -> FrameSelection:
    """The frames a video job processes, from its parameters."""
    return FrameSelection(fps=job.video.fps or 25, stride=job.params.get("frame_stride") or 1,
                          sample_fps=job.params.get("sample_fps"))


def frame_interval_ms(job: Job) -> float:
    """Milliseconds between the job's processed frames (frame_stride or sample_fps)."""
    return selection_for(job).interval_ms


def default_gap_ms(job: Job) -> int:
    """Segments: absences shorter than two processed frames do not split a presence."""
    return round(2 * frame_interval_ms(job))


def label_summary(*, job: Job) -> list[dict]:
    """Per label: boxes, unique objects (tracks; None where the video is not tracked),
    best confidence, first and last timestamp; most frequent first."""
    tracked = job.kind == Job.Kind.VIDEO and job.video.tracks is not None
    objects = {"tracked": Count("track_id", distinct=True)} if tracked else {}
    rows = (Detection.objects.filter(job=job).values("label")
            .annotate(count=Count("id"), max_confidence=Max("confidence"),
                      first_ms=Min("timestamp_ms"), last_ms=Max("timestamp_ms"), **objects)
            .order_by("-count", "label"))
    return [{"label": r["label"], "count": r["count"], "objects": r.get("tracked"),
             "max_confidence": round(r["max_confidence"], 6), "first_ms": r["first_ms"],
             "last_ms": r["last_ms"]} for r in rows]


def track_parameters(params: dict) -> tuple[int, float]:
    """A video job's lost-track buffer (ms) and track activation threshold: its own, else
    the settings' (TRACK_BUFFER_MS, TRACK_ACTIVATION_THRESHOLD)."""
    buffer_ms = params.get("track_buffer_ms")
    activation = params.get("track_activation_threshold")
    return (settings.TRACK_BUFFER_MS if buffer_ms is None else buffer_ms,
            settings.TRACK_ACTIVATION_THRESHOLD if activation is None else activation)


def job_tracks(*, job: Job) -> QuerySet[Track]:
    """A video job's tracks, by id (filtered by ``jobs.filters.TrackFilter``)."""
    return Track.objects.filter(job=job).order_by("track_id")


def label_segments(*, detections: QuerySet[Detection], gap_ms: int,
                   by_track: bool = False) -> list[dict]:
    """Per label (``by_track``: per track), the intervals [start_ms, end_ms] in which it
    is present.

    Consecutive frames where the label (the tracked object) is detected belong to one
    segment while the time between them is at most ``gap_ms`` (the gap tolerance): like
    Rekognition's SEGMENTS aggregation, short misses do not split a segment.
    ``detections``: a job's, filtered.
    """
    keys = ("label", "track_id") if by_track else ("label",)
    if by_track:
        detections = detections.filter(track_id__isnull=False)
    presence = (detections.values(*keys, "timestamp_ms").annotate(best=Max("confidence"),
                                                            instances=Count("id"))
                .order_by(*keys[::-1], "timestamp_ms"))
    segments: list[dict] = []
    current: dict | None = None
    for row in presence.iterator(chunk_size=10_000):
        if current and all(row[key] == current[key] for key in keys) and \
                row["timestamp_ms"] - current["end_ms"] <= gap_ms:
            current["end_ms"] = row["timestamp_ms"]
            current["frames"] += 1
            current["max_confidence"] = max(current["max_confidence"], row["best"])
            continue
        current = {**{key: row[key] for key in keys}, "start_ms": row["timestamp_ms"],
                   "end_ms": row["timestamp_ms"], "frames": 1, "max_confidence": row["best"]}
        segments.append(current)
    for segment in segments:
        segment["duration_ms"] = segment["end_ms"] - segment["start_ms"]
        segment["max_confidence"] = round(segment["max_confidence"], 6)
    return sorted(segments, key=lambda s: (s["start_ms"], s["label"], s.get("track_id", 0)))
