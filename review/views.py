"""The dashboard's pages beside the admin's job list and job page: the overview, the media
(staff only: uploads are never served publicly), review changes (POST) and exports. They
are served under the JobAdmin's URLs, with its permission checks."""

from __future__ import annotations

from datetime import timedelta

from django.contrib import messages
from django.core.files.storage import default_storage
from django.db.models import Count
from django.http import FileResponse, Http404, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from core.errors import ApiError
from jobs import selectors as job_selectors
from jobs.dispatch import queue_depths
from jobs.models import Detection, Job
from jobs.services import annotated_name
from jobs.thumbnails import thumbnail_name
from review import dashboard
from review import services as review
from review.models import AddedBox
from videos.services import annotation_request


def export_response(queryset, fmt: str) -> HttpResponse:
    """The jobs' reviewed boxes as a dataset to download (COCO or YOLO)."""
    data = review.export_dataset(jobs=queryset.order_by("created_at"), fmt=fmt)
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response = HttpResponse(data, content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="pmr-{fmt}-{stamp}.zip"'
    return response


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
            path("<uuid:job_id>/review", view(require_POST(self.review_post)),
                 name="jobs_job_review"),
            path("<uuid:job_id>/export/<str:fmt>", view(self.export_one),
                 name="jobs_job_export"),
        ]

    def job(self, request, job_id, *, change: bool = False) -> Job:
        """The job, if the user may see it (change it): else a 404, like a missing one."""
        job = get_object_or_404(Job.objects.select_related(
            "owner", "video", "review_mark__reviewed_by", "parent"),
                                pk=job_id)
        allowed = (self.admin.has_change_permission(request, job) if change
                   else self.admin.has_view_permission(request, job))
        if not allowed:
            raise Http404
        return job

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

    # --- review changes (POST) ------------------------------------------------------------
    def review_post(self, request, job_id):
        job = self.job(request, job_id, change=True)
        back = reverse("admin:jobs_job_change", args=[job.pk])
        frame = request.POST.get("frame_index", "0")
        if job.kind == Job.Kind.VIDEO:
            back += f"?frame={frame}"
        action = request.POST.get("action", "")
        try:
            if action in review.REVIEW_ACTIONS:
                detection = get_object_or_404(Detection, pk=request.POST.get("detection"),
                                              job=job)
                review.detection_review(detection=detection, user=request.user, action=action,
                                        label=request.POST.get("label"))
            elif action == "add_box":
                review.box_add(job=job, user=request.user, label=request.POST.get("label", ""),
                               frame_index=int(frame), **{
                                   k: float(request.POST.get(k, "nan"))
                                   for k in ("x1", "y1", "x2", "y2")})
            elif action == "remove_box":
                box = get_object_or_404(AddedBox, pk=request.POST.get("box"), job=job)
                review.box_remove(box=box, user=request.user)
            elif action == "annotate":
                if annotation_request(job=job):
                    messages.success(request, "The annotated video is being rendered; reload "
                                              "this page in a while.")
                else:
                    messages.info(request, "The annotated video was asked for recently.")
            elif action == "mark_reviewed":
                review.job_mark_reviewed(job=job, user=request.user)
                messages.success(request, "Marked reviewed.")
            elif action == "rerun":
                threshold = request.POST.get("min_confidence") or None
                rerun = review.job_rerun(job=job, user=request.user,
                                         model_name=request.POST.get("model") or None,
                                         min_confidence=float(threshold) if threshold else None)
                messages.success(request, format_html(
                    'Re-run queued: <a href="{}">job {}</a>.',
                    reverse("admin:jobs_job_change", args=[rerun.pk]), rerun.pk))
            else:
                messages.error(request, f"Unknown action {action!r}.")
        except (ApiError, ValueError) as exc:
            messages.error(request, str(getattr(exc, "message", exc)))
        return HttpResponseRedirect(back)

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
