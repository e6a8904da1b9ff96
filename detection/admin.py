"""The review dashboard, on the Django admin.

- Job list: thumbnail, kind, owner, status (progress bar for videos), detections per
  label, review state; filters and search.
- Job page: the image (or a chosen video frame) with its boxes drawn over it (SVG),
  the detections with confirm / reject / relabel, boxes to add (drawn or typed), the
  review history; for videos a timeline of detections per label and the annotated video.
- Actions: mark reviewed, re-run with another model or threshold, export COCO / YOLO.
- Overview: jobs per day, queue and workers, inference time, labels, review backlog.

Every page costs a fixed number of queries, whatever the number of detections.
"""

from __future__ import annotations

import io
from datetime import timedelta

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.core.files.storage import default_storage
from django.db.models import Count, Exists, F, OuterRef
from django.db.models.functions import TruncDate
from django.http import FileResponse, Http404, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_POST
from PIL import Image

from detection import review
from detection.catalog import class_names, installed_models
from detection.engine.annotate import label_colour
from detection.models import AddedBox, Detection, Job, ReviewEvent, WorkerHeartbeat
from detection.selectors import throughput
from detection.services import thumbnail_name
from pmr.errors import ApiError
from pmr.metrics import queue_depths
from videos import selectors as video_selectors
from videos.services import annotation_request

THUMBNAIL_SIZE = 96
FRAME_DETECTION_LIMIT = 500  # boxes drawn and listed on one image or frame
TIMELINE_BUCKETS = 120
TIMELINE_LABELS = 8


def css_colour(class_id: int) -> str:
    red, green, blue = label_colour(class_id)
    return f"rgb({red},{green},{blue})"


class LabelFilter(admin.SimpleListFilter):
    title = "label present"
    parameter_name = "label"
    template = "admin/detection/dropdown_filter.html"  # 80 classes: a list would be too long

    def lookups(self, request, model_admin):
        try:
            names = class_names(settings.DETECTOR_MODEL)
        except OSError:
            names = ()
        return [(name, name) for name in names]

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        if queryset.model is Detection:
            return queryset.filter(label=self.value())
        return queryset.filter(Exists(Detection.objects.filter(job=OuterRef("pk"),
                                                              label=self.value())))


class ReviewedFilter(admin.SimpleListFilter):
    title = "review"
    parameter_name = "review"

    def lookups(self, request, model_admin):
        return [("reviewed", "reviewed"), ("waiting", "waiting for review (succeeded)"),
                ("started", "review started, not marked reviewed")]

    def queryset(self, request, queryset):
        if self.value() == "reviewed":
            return queryset.filter(reviewed_at__isnull=False)
        if self.value() == "waiting":
            return queryset.filter(reviewed_at__isnull=True, status=Job.Status.SUCCEEDED)
        if self.value() == "started":
            return queryset.filter(Exists(ReviewEvent.objects.filter(job=OuterRef("pk"))),
                                   reviewed_at__isnull=True)
        return queryset


class JobChangeList(ChangeList):
    """The job list, with the page's per-label counts and review starts in two queries."""

    def get_results(self, request):
        super().get_results(request)
        ids = [job.pk for job in self.result_list]
        counts: dict = {}
        rows = (Detection.objects.filter(job__in=ids).values("job_id", "label")
                .annotate(n=Count("id")).order_by("job_id", "-n", "label"))
        for row in rows:
            counts.setdefault(row["job_id"], []).append((row["label"], row["n"]))
        started = set(ReviewEvent.objects.filter(job__in=ids).values_list("job_id", flat=True)
                      .distinct())
        for job in self.result_list:
            job.label_counts = counts.get(job.pk, [])
            job.review_started = job.pk in started


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ("thumbnail", "short_id", "kind", "owner", "status_progress",
                    "original_filename", "labels", "review_state", "created_at")
    list_display_links = ("thumbnail", "short_id")
    list_filter = ("status", "kind", LabelFilter, ReviewedFilter, "created_at")
    search_fields = ("id", "original_filename", "owner__username")
    list_select_related = ("owner", "reviewed_by")
    date_hierarchy = "created_at"
    actions = ("mark_reviewed", "export_coco", "export_yolo")
    change_list_template = "admin/detection/job/change_list.html"
    show_full_result_count = False

    def get_changelist(self, request, **kwargs):
        return JobChangeList

    def get_search_results(self, request, queryset, search_term):
        # An id searched in full is an exact match, so it stays fast on large tables.
        try:
            import uuid

            return queryset.filter(pk=uuid.UUID(search_term.strip())), False
        except ValueError:
            return super().get_search_results(request, queryset, search_term)

    def has_add_permission(self, request):
        return False  # jobs come from the API

    # --- list columns ------------------------------------------------------------------
    @admin.display(description="")
    def thumbnail(self, job: Job):
        url = reverse("admin:detection_job_thumbnail", args=[job.pk])
        return format_html('<img src="{}" alt="" loading="lazy" width="{}" '
                           'style="max-height:{}px;object-fit:contain;background:#eee">',
                           url, THUMBNAIL_SIZE, THUMBNAIL_SIZE)

    @admin.display(description="id", ordering="id")
    def short_id(self, job: Job) -> str:
        return str(job.pk)[:8]

    @admin.display(description="status", ordering="status")
    def status_progress(self, job: Job):
        if job.kind != Job.Kind.VIDEO:
            return job.status
        done, total = job.frames_done, job.frames_total or 0
        percent = round(100 * done / total) if total else 0
        return format_html('{}<br><progress max="100" value="{}" title="{} of {} frames">'
                           '</progress> {}%', job.status, percent, done, total, percent)

    @admin.display(description="detections per label")
    def labels(self, job: Job):
        counts = getattr(job, "label_counts", [])
        if not counts:
            return "-"
        shown = format_html_join(", ", "{}\u00a0{}", counts[:6])
        more = f" (+{len(counts) - 6} labels)" if len(counts) > 6 else ""
        return format_html("{}{}", shown, more)

    @admin.display(description="review", ordering="reviewed_at")
    def review_state(self, job: Job) -> str:
        if job.reviewed_at:
            who = job.reviewed_by.get_username() if job.reviewed_by else "?"
            return f"reviewed by {who}"
        return "in progress" if getattr(job, "review_started", False) else "not reviewed"

    # --- actions -------------------------------------------------------------------------
    @admin.action(description="Mark the selected jobs reviewed")
    def mark_reviewed(self, request, queryset):
        for job in queryset:
            review.job_mark_reviewed(job=job, user=request.user)
        self.message_user(request, f"{queryset.count()} job(s) marked reviewed.")

    def _export(self, queryset, fmt: str) -> HttpResponse:
        data = review.export_dataset(jobs=queryset.order_by("created_at"), fmt=fmt)
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        response = HttpResponse(data, content_type="application/zip")
        response["Content-Disposition"] = f'attachment; filename="pmr-{fmt}-{stamp}.zip"'
        return response

    @admin.action(description="Export the reviewed boxes as a COCO dataset (zip)")
    def export_coco(self, request, queryset):
        return self._export(queryset, "coco")

    @admin.action(description="Export the reviewed boxes as YOLO labels (zip)")
    def export_yolo(self, request, queryset):
        return self._export(queryset, "yolo")

    # --- pages -----------------------------------------------------------------------------
    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("overview/", view(self.overview), name="detection_job_overview"),
            path("<uuid:job_id>/input", view(self.input_file), name="detection_job_input"),
            path("<uuid:job_id>/thumbnail", view(self.thumbnail_image),
                 name="detection_job_thumbnail"),
            path("<uuid:job_id>/frame/<int:frame_index>", view(self.frame_image),
                 name="detection_job_frame"),
            path("<uuid:job_id>/annotated", view(self.annotated_video),
                 name="detection_job_annotated"),
            path("<uuid:job_id>/review", view(self.review_post), name="detection_job_review"),
            path("<uuid:job_id>/export/<str:fmt>", view(self.export_one),
                 name="detection_job_export"),
            *super().get_urls(),
        ]

    def _job(self, request, job_id, *, change: bool = False) -> Job:
        job = get_object_or_404(Job.objects.select_related("owner", "reviewed_by", "parent"),
                                pk=job_id)
        allowed = (self.has_change_permission(request, job) if change
                   else self.has_view_permission(request, job))
        if not allowed:
            raise Http404
        return job

    def change_view(self, request, object_id, form_url="", extra_context=None):
        job = self._job(request, object_id)
        names = self._names(job)
        frame_index = self._chosen_frame(request, job)
        detections = list(Detection.objects.filter(job=job, frame_index=frame_index)
                          .select_related("reviewed_by")
                          .order_by("-confidence", "id")[:FRAME_DETECTION_LIMIT])
        added = list(AddedBox.objects.filter(job=job, frame_index=frame_index,
                                             removed_at__isnull=True).select_related("created_by"))
        image_url = (reverse("admin:detection_job_input", args=[job.pk])
                     if job.kind == Job.Kind.IMAGE
                     else reverse("admin:detection_job_frame", args=[job.pk, frame_index]))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta, "title": f"{job.kind.capitalize()} job {job.pk}",
            "job": job, "names": names, "frame_index": frame_index,
            "detections": detections, "added_boxes": added,
            "overlay": self._overlay(job, detections, added, image_url),
            "events": ReviewEvent.objects.filter(job=job).select_related(
                "user", "detection", "added_box")[:50],
            "counts": Detection.objects.filter(job=job).aggregate(
                total=Count("id")),
            "timeline": self._timeline(job) if job.kind == Job.Kind.VIDEO else None,
            "models": installed_models(),
            "can_change": self.has_change_permission(request, job),
            "reruns": list(job.reruns.all().only("id", "status", "created_at")),
        }
        return TemplateResponse(request, "admin/detection/job/review.html", context)

    @staticmethod
    def _names(job: Job) -> list[str]:
        try:
            return list(class_names(job.model_name))
        except OSError:
            return []

    @staticmethod
    def _chosen_frame(request, job: Job) -> int:
        if job.kind != Job.Kind.VIDEO:
            return 0
        try:
            wanted = int(request.GET.get("frame", ""))
        except ValueError:
            wanted = None
        if wanted is not None and 0 <= wanted < (job.frame_count or 1):
            return wanted
        busiest = (Detection.objects.filter(job=job).values("frame_index")
                   .annotate(n=Count("id")).order_by("-n", "frame_index").first())
        return busiest["frame_index"] if busiest else 0

    @staticmethod
    def _overlay(job: Job, detections, added, image_url: str) -> str:
        """The picture with its boxes as inline SVG: model boxes (dashed when rejected, with
        the new label when relabelled) and added boxes (thicker)."""
        width, height = job.width or 1, job.height or 1
        stroke = max(1.5, min(width, height) / 250)
        font = max(10.0, min(width, height) / 40)
        shapes = []
        for d in detections:
            relabelled = d.review_status == Detection.Review.RELABELLED
            label = d.review_label if relabelled else d.label
            class_id = d.review_class_id if relabelled else d.class_id
            dash = (mark_safe(' stroke-dasharray="6 4" opacity="0.6"')
                    if d.review_status == Detection.Review.REJECTED else "")
            mark = {"confirmed": " ✓", "rejected": " ✗", "relabelled": f" (was {d.label})"}.get(
                d.review_status, "")
            shapes.append(format_html(
                '<g class="pmr-box" data-detection="{}" data-status="{}"><rect x="{}" y="{}" '
                'width="{}" height="{}" fill="none" stroke="{}" stroke-width="{}"{}/>'
                '<text x="{}" y="{}" fill="{}" font-size="{}" font-family="sans-serif" '
                'stroke="black" stroke-width="{}" paint-order="stroke">{} {}{}</text></g>',
                d.pk, d.review_status, d.x1, d.y1, d.x2 - d.x1, d.y2 - d.y1,
                css_colour(class_id), stroke, dash, d.x1 + 2,
                max(font, d.y1 - 3), css_colour(class_id), font, font / 8, label,
                f"{d.confidence:.2f}", mark))
        for b in added:
            shapes.append(format_html(
                '<g class="pmr-added" data-box="{}"><rect x="{}" y="{}" width="{}" height="{}" '
                'fill="none" stroke="{}" stroke-width="{}"/><text x="{}" y="{}" fill="{}" '
                'font-size="{}" font-family="sans-serif" stroke="black" stroke-width="{}" '
                'paint-order="stroke">+ {}</text></g>',
                b.pk, b.x1, b.y1, b.x2 - b.x1, b.y2 - b.y1, css_colour(b.class_id), 2 * stroke,
                b.x1 + 2, max(font, b.y1 - 3), css_colour(b.class_id), font, font / 8, b.label))
        return format_html(
            '<svg id="pmr-overlay" viewBox="0 0 {} {}" width="{}" data-width="{}" data-height="{}" '
            'style="max-width:100%;height:auto;background:#ddd;cursor:crosshair">'
            '<image href="{}" width="{}" height="{}"/>{}'
            '<rect id="pmr-draft" x="0" y="0" width="0" height="0" fill="rgba(255,255,0,.15)" '
            'stroke="yellow" stroke-width="{}" stroke-dasharray="4 3"/></svg>',
            width, height, width, width, height, image_url, width, height,
            format_html_join("", "{}", ((shape,) for shape in shapes)), stroke)

    @staticmethod
    def _timeline(job: Job) -> dict | None:
        """Detections per label over time (bucketed), as SVG polylines with clickable
        columns that choose the frame shown."""
        duration = max(job.duration_ms or 0, 1)
        # Never finer than the processed frames, or the lines fall to zero between them.
        frame_ms = video_selectors.frame_interval_ms(job)
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
        columns = [{"x": b * step, "frame": int(b * bucket_ms * job.fps / 1000),
                    "time": f"{b * bucket_ms / 1000:.1f}"} for b in range(buckets)]
        return {"width": width, "height": height, "step": step, "lines": lines,
                "columns": columns, "peak": peak, "bucket_ms": bucket_ms}

    # --- media (staff only; uploads are never served publicly) -------------------------------
    @staticmethod
    def _file(name: str, content_type: str) -> FileResponse:
        try:
            stream = default_storage.open(name, "rb")
        except FileNotFoundError:
            raise Http404 from None
        response = FileResponse(stream, content_type=content_type)
        response["X-Content-Type-Options"] = "nosniff"
        response["Content-Security-Policy"] = "default-src 'none'; sandbox"
        return response

    def input_file(self, request, job_id):
        job = self._job(request, job_id)
        if not job.input_file:
            raise Http404
        return self._file(job.input_file.name, job.content_type or "application/octet-stream")

    def annotated_video(self, request, job_id):
        job = self._job(request, job_id)
        if not job.annotated_file:
            raise Http404
        return self._file(job.annotated_file.name, "video/mp4")

    def thumbnail_image(self, request, job_id):
        job = self._job(request, job_id)
        if not job.input_file:
            raise Http404
        name = thumbnail_name(job)
        if not default_storage.exists(name):
            try:
                if job.kind == Job.Kind.IMAGE:
                    with default_storage.open(job.input_file.name, "rb") as stream:
                        picture = Image.open(stream).convert("RGB")
                        picture.thumbnail((2 * THUMBNAIL_SIZE, 2 * THUMBNAIL_SIZE))
                else:
                    data = review._frame_jpeg(job, 0)
                    picture = Image.open(io.BytesIO(data))
                    picture.thumbnail((2 * THUMBNAIL_SIZE, 2 * THUMBNAIL_SIZE))
            except (OSError, ApiError, FileNotFoundError):
                raise Http404 from None
            buffer = io.BytesIO()
            picture.save(buffer, "JPEG", quality=80)
            buffer.seek(0)
            default_storage.save(name, buffer)
        response = self._file(name, "image/jpeg")
        response["Cache-Control"] = "private, max-age=86400"
        return response

    def frame_image(self, request, job_id, frame_index):
        job = self._job(request, job_id)
        if job.kind != Job.Kind.VIDEO or not job.input_file:
            raise Http404
        try:
            data = review._frame_jpeg(job, frame_index)
        except (ApiError, FileNotFoundError):
            raise Http404 from None
        response = HttpResponse(data, content_type="image/jpeg")
        response["Cache-Control"] = "private, max-age=86400"
        return response

    # --- review changes (POST) ------------------------------------------------------------
    def review_post(self, request, job_id):
        return require_POST(self._review_post)(request, job_id)

    def _review_post(self, request, job_id):
        job = self._job(request, job_id, change=True)
        back = reverse("admin:detection_job_change", args=[job.pk])
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
                    reverse("admin:detection_job_change", args=[rerun.pk]), rerun.pk))
            else:
                messages.error(request, f"Unknown action {action!r}.")
        except (ApiError, ValueError) as exc:
            messages.error(request, str(getattr(exc, "message", exc)))
        return HttpResponseRedirect(back)

    def export_one(self, request, job_id, fmt):
        job = self._job(request, job_id)
        if fmt not in ("coco", "yolo"):
            raise Http404
        return self._export(Job.objects.filter(pk=job.pk), fmt)

    # --- overview --------------------------------------------------------------------------
    def overview(self, request):
        now = timezone.now()
        since = now - timedelta(days=14)
        per_day = list(Job.objects.filter(created_at__gte=since)
                       .annotate(day=TruncDate("created_at")).values("day", "kind")
                       .annotate(n=Count("id")).order_by("day"))
        days: dict = {}
        for row in per_day:
            days.setdefault(row["day"], {"image": 0, "video": 0})[row["kind"]] = row["n"]
        peak = max((sum(v.values()) for v in days.values()), default=1)
        day_rows = [{"day": day, "image": v["image"], "video": v["video"],
                     "total": v["image"] + v["video"],
                     "percent": round(100 * (v["image"] + v["video"]) / peak)}
                    for day, v in sorted(days.items())]
        stale = now - timedelta(seconds=settings.WORKER_STALE_SECONDS)
        recent = now - timedelta(hours=24)
        speed = throughput(since=recent)
        context = {
            **self.admin_site.each_context(request), "opts": self.model._meta,
            "title": "Detection overview", "days": day_rows,
            "queued": dict(Job.objects.filter(status=Job.Status.QUEUED).values_list("kind")
                           .annotate(n=Count("id")).order_by()),
            "broker_depths": queue_depths(),
            "running": Job.objects.filter(status=Job.Status.RUNNING).count(),
            "workers": WorkerHeartbeat.objects.filter(last_seen__gte=stale).order_by("hostname"),
            "speed": speed,
            "labels": Detection.objects.filter(job__created_at__gte=now - timedelta(days=30))
            .values("label").annotate(n=Count("id")).order_by("-n")[:10],
            "waiting": Job.objects.filter(status=Job.Status.SUCCEEDED,
                                          reviewed_at__isnull=True).count(),
            "waiting_url": reverse("admin:detection_job_changelist") + "?review=waiting",
        }
        return TemplateResponse(request, "admin/detection/job/overview.html", context)


@admin.register(Detection)
class DetectionAdmin(admin.ModelAdmin):
    list_display = ("id", "job", "frame_index", "label", "confidence", "review_status",
                    "review_label", "reviewed_by")
    list_filter = ("review_status", LabelFilter)
    search_fields = ("job__id",)
    raw_id_fields = ("job", "reviewed_by")
    list_select_related = ("job", "reviewed_by")
    show_full_result_count = False
    readonly_fields = ("job", "frame_index", "timestamp_ms", "class_id", "label", "confidence",
                       "x1", "y1", "x2", "y2", "review_status", "review_label", "review_class_id",
                       "reviewed_by", "reviewed_at")

    def has_add_permission(self, request):
        return False


@admin.register(ReviewEvent)
class ReviewEventAdmin(admin.ModelAdmin):
    list_display = ("created_at", "user", "action", "job", "detection", "added_box")
    list_filter = ("action",)
    list_select_related = ("user", "job")
    raw_id_fields = ("job", "detection", "added_box", "user")
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False  # the history is append-only

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(admin.ModelAdmin):
    list_display = ("hostname", "device", "model_name", "precision", "queues", "last_seen")
