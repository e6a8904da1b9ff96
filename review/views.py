"""The dashboard's pages beside the admin's job list and job page: the overview, the media
(staff only: uploads are never served publicly) and exports; the review changes are
``review.actions``. They are served under the JobAdmin's URLs, with its permission
checks."""

from __future__ import annotations

import re
from datetime import timedelta

from django.core.exceptions import PermissionDenied
from django.core.files.storage import default_storage
from django.db.models import Count
from django.http import (
    FileResponse,
    Http404,
    HttpResponse,
    HttpResponseRedirect,
    StreamingHttpResponse,
)
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone

from core.errors import ApiError
from jobs import catalog
from jobs import selectors as job_selectors
from jobs.dispatch import queue_depths
from jobs.models import Detection, DetectorModel, Job
from jobs.services import annotated_name
from jobs.thumbnails import thumbnail_name
from review import dashboard
from review import services as review
from review.models import ModelScoring


def export_response(queryset, fmt: str) -> HttpResponse:
    """The jobs' reviewed boxes as a dataset to download (COCO or YOLO)."""
    data = review.export_dataset(jobs=queryset.order_by("created_at"), fmt=fmt)
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response = HttpResponse(data, content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="pmr-{fmt}-{stamp}.zip"'
    return response


# One byte range, as browsers ask for a video's: "bytes=100-", "bytes=100-199", "bytes=-500".
RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def _chunks(stream, length: int, size: int = 1 << 16):
    """``length`` bytes of ``stream`` from where it is, in pieces; then it is closed."""
    try:
        while length > 0:
            piece = stream.read(min(size, length))
            if not piece:
                break
            length -= len(piece)
            yield piece
    finally:
        stream.close()


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
            path("scores/", view(self.scores), name="jobs_job_scores"),
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
    def file(request, name: str, content_type: str) -> HttpResponse:
        """A stored file, with byte ranges (RFC 9110) so that a video can be seeked."""
        try:
            stream = default_storage.open(name, "rb")
        except FileNotFoundError:
            raise Http404 from None
        wanted = RANGE.fullmatch(request.headers.get("Range", "").strip())
        if wanted is None:
            response: HttpResponse = FileResponse(stream, content_type=content_type)
        else:
            size = default_storage.size(name)
            first, last = wanted.groups()
            if first:
                start, end = int(first), min(int(last) if last else size - 1, size - 1)
            else:  # the last N bytes
                start, end = max(0, size - int(last or 0)), size - 1
            if (not last and not first) or start > end or start >= size:
                stream.close()
                response = HttpResponse(status=416)
                response["Content-Range"] = f"bytes */{size}"
                return response
            stream.seek(start)
            response = StreamingHttpResponse(_chunks(stream, end - start + 1), status=206,
                                             content_type=content_type)
            response["Content-Range"] = f"bytes {start}-{end}/{size}"
            response["Content-Length"] = str(end - start + 1)
        response["Accept-Ranges"] = "bytes"
        response["X-Content-Type-Options"] = "nosniff"
        response["Content-Security-Policy"] = "default-src 'none'; sandbox"
        return response

    def input_file(self, request, job_id):
        job = self.job(request, job_id)
        if not job.input_file:
            raise Http404
        return self.file(request, job.input_file.name,
                         job.content_type or "application/octet-stream")

    def annotated_video(self, request, job_id):
        job = self.job(request, job_id)
        name = annotated_name(job)
        if not name:
            raise Http404
        return self.file(request, name, "video/mp4")

    def thumbnail_image(self, request, job_id):
        """The thumbnail its worker made when the job finished (none: 404)."""
        name = thumbnail_name(self.job(request, job_id))
        if not default_storage.exists(name):
            raise Http404
        response = self.file(request, name, "image/jpeg")
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
        state = job_selectors.service_state(now=now, recent=timedelta(hours=24))
        queued = {kind: n for kind in Job.Kind.values
                  if (n := state.count(kind=kind, status=Job.Status.QUEUED))}
        depths = queue_depths()
        labels = [(row["label"], row["n"]) for row in Detection.objects.filter(
            job__created_at__gte=now - timedelta(days=30)).values("label")
            .annotate(n=Count("id")).order_by("-n")[:10]]
        progress = dashboard.review_progress(now - timedelta(days=30))
        waiting_now = {"queued images": queued.get("image", 0),
                       "queued videos": queued.get("video", 0),
                       "running": state.count(status=Job.Status.RUNNING),
                       **{f"broker: {queue}": depth for queue, depth in (depths or {}).items()},
                       "workers online": len(state.live_workers)}
        context = {
            **self.admin.admin_site.each_context(request), "opts": Job._meta,
            "title": "Detection overview",
            "charts": dashboard.overview_charts(hourly=dashboard.per_hour(now), labels=labels,
                                                progress=progress, queue=waiting_now),
            "queued": queued, "broker_depths": depths,
            "running": state.count(status=Job.Status.RUNNING),
            "workers": state.live_workers,
            "speed": state.recent,
            "labels": labels,
            "waiting": progress["total"] - progress["reviewed"],
            "waiting_url": reverse("admin:jobs_job_changelist") + "?review=waiting",
        }
        return TemplateResponse(request, "admin/jobs/job/overview.html", context)

    # --- scores on the reviewed data -------------------------------------------------------
    def scores(self, request):
        """Models scored side by side on the reviewed data: start a scoring (it runs on a
        worker), follow its progress, read the table."""
        error = ""
        if request.method == "POST":
            if not self.admin.has_change_permission(request):
                raise PermissionDenied
            try:
                review.scoring_start(user=request.user, refs=request.POST.getlist("model"))
            except ApiError as exc:
                error = exc.message
            else:
                return HttpResponseRedirect(reverse("admin:jobs_job_scores"))
        runs = list(ModelScoring.objects.select_related("created_by")[:20])
        latest = next((run for run in runs if run.status == ModelScoring.Status.SUCCEEDED),
                      None)
        context = {
            **self.admin.admin_site.each_context(request), "opts": Job._meta,
            "title": "Model scores on the reviewed data",
            "models": [(m.ref, m.is_default) for m in catalog_models()],
            "runs": runs, "latest": latest,
            "table": dashboard.score_table(latest.result) if latest else None,
            "reviewed_jobs": Job.objects.filter(review_mark__isnull=False).count(),
            "busy": any(run.status in (ModelScoring.Status.QUEUED, ModelScoring.Status.RUNNING)
                        for run in runs),
            "can_change": self.admin.has_change_permission(request),
            "error": error,
        }
        return TemplateResponse(request, "admin/jobs/job/scores.html", context,
                                status=400 if error else 200)


def catalog_models():
    """Every model version a scoring may name."""
    catalog.register_builtins()
    return DetectorModel.objects.all()
