"""The dashboard's pages beside the admin's job list and job page: the overview, the media
(staff only: uploads are never served publicly) and exports; the review changes are
``review.actions``. They are served under the JobAdmin's URLs, with its permission
checks."""

from __future__ import annotations

from datetime import timedelta

from django.core.files.storage import default_storage
from django.db.models import Count
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone

from core.errors import ApiError
from jobs import selectors as job_selectors
from jobs.dispatch import queue_depths
from jobs.models import Detection, Job
from jobs.services import annotated_name
from jobs.thumbnails import thumbnail_name
from review import dashboard
from review import services as review


def export_response(queryset, fmt: str) -> HttpResponse:
    """The jobs' reviewed boxes as a dataset to download (COCO or YOLO)."""
    data = review.export_dataset(jobs=queryset.order_by("created_at"), fmt=fmt)
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response = HttpResponse(data, content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="pmr-{fmt}-{stamp}.zip"'
    return response


def visible_job(model_admin, request, job_id, *, change: bool = False) -> Job:
    """The job, if the user may see it (change it): else a 404, like a missing one."""
    job = get_object_or_404(Job.objects.select_related(
        "owner", "video", "review_mark__reviewed_by", "parent"), pk=job_id)
    allowed = (model_admin.has_change_permission(request, job) if change
               else model_admin.has_view_permission(request, job))
    if not allowed:
        raise Http404
    return job


class JobPages:
    def __init__(self, model_admin) -> None:
        self.admin = model_admin

    def urls(self) -> list:
        view = self.admin.admin_site.admin_view
        return [
            path("overview/", view(self.overview), name="jobs_job_overview"),
            path("<uuid:job_id>/input", view(self.input_file), name="jobs_job_input"),
            path("<uuid:job_id>/thumbnail", view(self.thumbnail_image),
                 name="jobs_job_thumbnail"),
            path("<uuid:job_id>/frame/<int:frame_index>", view(self.frame_image),
                 name="jobs_job_frame"),
            path("<uuid:job_id>/annotated", view(self.annotated_video),
                 name="jobs_job_annotated"),
            path("<uuid:job_id>/export/<str:fmt>", view(self.export_one),
                 name="jobs_job_export"),
        ]

    def job(self, request, job_id) -> Job:
        return visible_job(self.admin, request, job_id)

    @staticmethod
    def file(name: str, content_type: str) -> FileResponse:
        try:
            stream = default_storage.open(name, "rb")
        except FileNotFoundError:
            raise Http404 from None
        response = FileResponse(stream, content_type=content_type)
        response["X-Content-Type-Options"] = "nosniff"
        response["Content-Security-Policy"] = "default-src 'none'; sandbox"
        return response

    def input_file(self, request, job_id):
        job = self.job(request, job_id)
        if not job.input_file:
            raise Http404
        return self.file(job.input_file.name, job.content_type or "application/octet-stream")

    def annotated_video(self, request, job_id):
        job = self.job(request, job_id)
        name = annotated_name(job)
        if not name:
            raise Http404
        return self.file(name, "video/mp4")

    def thumbnail_image(self, request, job_id):
        """The thumbnail its worker made when the job finished (none: 404)."""
        name = thumbnail_name(self.job(request, job_id))
        if not default_storage.exists(name):
            raise Http404
        response = self.file(name, "image/jpeg")
        response["Cache-Control"] = "private, max-age=86400"
        return response

    def frame_image(self, request, job_id, frame_index):
        job = self.job(request, job_id)
        if job.kind != Job.Kind.VIDEO or not job.input_file:
            raise Http404
        try:
            data = review.frame_jpeg(job, frame_index)
        except (ApiError, FileNotFoundError):
            raise Http404 from None
        response = HttpResponse(data, content_type="image/jpeg")
        response["Cache-Control"] = "private, max-age=86400"
        return response

    def export_one(self, request, job_id, fmt):
        job = self.job(request, job_id)
        if fmt not in ("coco", "yolo"):
            raise Http404
        return export_response(Job.objects.filter(pk=job.pk), fmt)

    # --- overview --------------------------------------------------------------------------
    def overview(self, request):
        now = timezone.now()
        since = now - timedelta(days=14)
        state = job_selectors.service_state(now=now, recent=timedelta(hours=24))
        context = {
            **self.admin.admin_site.each_context(request), "opts": Job._meta,
            "title": "Detection overview", "days": dashboard.jobs_per_day(since),
            "queued": {kind: n for kind in Job.Kind.values
                       if (n := state.count(kind=kind, status=Job.Status.QUEUED))},
            "broker_depths": queue_depths(),
            "running": state.count(status=Job.Status.RUNNING),
            "workers": state.live_workers,
            "speed": state.recent,
            "labels": Detection.objects.filter(job__created_at__gte=now - timedelta(days=30))
            .values("label").annotate(n=Count("id")).order_by("-n")[:10],
            "waiting": Job.objects.filter(status=Job.Status.SUCCEEDED,
                                          review_mark__isnull=True).count(),
            "waiting_url": reverse("admin:jobs_job_changelist") + "?review=waiting",
        }
        return TemplateResponse(request, "admin/jobs/job/overview.html", context)
