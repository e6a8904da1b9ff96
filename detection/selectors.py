"""Reads: the jobs and detections a caller may see, and the service's throughput."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Avg, Count, QuerySet, Sum
from django.http import Http404

from detection.models import Detection, Job


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
        frames=Sum("frames_done"), ms=Sum("processing_ms"))
    fps = videos["frames"] / (videos["ms"] / 1000) if videos["frames"] and videos["ms"] else None
    return Throughput(images_done=images["n"], image_inference_ms=images["inference"],
                      image_total_ms=images["total"], video_frames_per_second=fps)


def jobs_visible_to(user) -> QuerySet[Job]:
    """A user's own jobs; anonymous callers (when allowed) share the owner-less ones."""
    if user is None or not user.is_authenticated:
        return Job.objects.filter(owner__isnull=True)
    return Job.objects.filter(owner=user)


def job_list(*, user) -> QuerySet[Job]:
    """The caller's jobs, newest first (filtered by ``detection.filters.JobFilter``)."""
    return jobs_visible_to(user).annotate(detection_count=Count("detections")).order_by(
        "-created_at")


def job_get(*, user, job_id) -> Job:
    """The job, if the user may see it; another user's job is a 404, like a missing one."""
    job = jobs_visible_to(user).filter(pk=job_id).first()
    if job is None:
        raise Http404("no such job")
    return job


def job_detections(*, job: Job) -> QuerySet[Detection]:
    return Detection.objects.filter(job=job).order_by("frame_index", "-confidence", "id")
