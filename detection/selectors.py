"""Reads: the jobs and detections a caller may see."""

from __future__ import annotations

from django.db.models import Count, QuerySet
from django.http import Http404

from detection.models import Detection, Job


def jobs_visible_to(user) -> QuerySet[Job]:
    """A user's own jobs; anonymous callers (when allowed) share the owner-less ones."""
    if user is None or not user.is_authenticated:
        return Job.objects.filter(owner__isnull=True)
    return Job.objects.filter(owner=user)


def job_list(*, user, kind: str | None = None, status: str | None = None) -> QuerySet[Job]:
    jobs = jobs_visible_to(user).annotate(detection_count=Count("detections"))
    if kind:
        jobs = jobs.filter(kind=kind)
    if status:
        jobs = jobs.filter(status=status)
    return jobs.order_by("-created_at")


def job_get(*, user, job_id) -> Job:
    """The job, if the user may see it; another user's job is a 404, like a missing one."""
    job = jobs_visible_to(user).filter(pk=job_id).first()
    if job is None:
        raise Http404("no such job")
    return job


def job_detections(*, job: Job) -> QuerySet[Detection]:
    return Detection.objects.filter(job=job).order_by("frame_index", "-confidence", "id")
