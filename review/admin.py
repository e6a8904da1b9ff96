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

import uuid

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.db.models import Count, Exists, OuterRef
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from core.errors import ApiError
from jobs.catalog import class_names, installed_models
from jobs.models import Detection, DetectorModel, Job, WorkerHeartbeat
from review import actions, api, dashboard, views
from review import services as review
from review.models import ReviewEvent

THUMBNAIL_SIZE = 96
class LabelFilter(admin.SimpleListFilter):
    title = "label present"
    parameter_name = "label"
    template = "admin/jobs/dropdown_filter.html"  # 80 classes: a list would be too long

    def lookups(self, request, model_admin):
        try:
            names = class_names(settings.DETECTOR_MODEL)
        except (OSError, ApiError):
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
            return queryset.filter(review_mark__isnull=False)
        if self.value() == "waiting":
            return queryset.filter(review_mark__isnull=True, status=Job.Status.SUCCEEDED)
        if self.value() == "started":
            return queryset.filter(Exists(ReviewEvent.objects.filter(job=OuterRef("pk"))),
                                   review_mark__isnull=True)
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
    list_select_related = ("owner", "video", "review_mark__reviewed_by")
    date_hierarchy = "created_at"
    actions = ("mark_reviewed", "export_coco", "export_yolo")
    change_list_template = "admin/jobs/job/change_list.html"
    show_full_result_count = False

    def get_changelist(self, request, **kwargs):
        return JobChangeList

    def get_search_results(self, request, queryset, search_term):
        # An id searched in full is an exact match, so it stays fast on large tables.
        try:
            return queryset.filter(pk=uuid.UUID(search_term.strip())), False
        except ValueError:
            return super().get_search_results(request, queryset, search_term)

    def has_add_permission(self, request):
        return False  # jobs come from the API

    # --- list columns ------------------------------------------------------------------
    @admin.display(description="")
    def thumbnail(self, job: Job):
        url = reverse("admin:jobs_job_thumbnail", args=[job.pk])
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
        done, total = job.video.frames_done, job.video.frames_total or 0
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

    @admin.display(description="review", ordering="review_mark__reviewed_at")
    def review_state(self, job: Job) -> str:
        mark = getattr(job, "review_mark", None)  # a job not marked reviewed has none
        if mark is not None:
            who = mark.reviewed_by.get_username() if mark.reviewed_by else "?"
            return f"reviewed by {who}"
        return "in progress" if getattr(job, "review_started", False) else "not reviewed"

    # --- actions -------------------------------------------------------------------------
    @admin.action(description="Mark the selected jobs reviewed")
    def mark_reviewed(self, request, queryset):
        for job in queryset:
            review.job_mark_reviewed(job=job, user=request.user)
        self.message_user(request, f"{queryset.count()} job(s) marked reviewed.")

    @admin.action(description="Export the reviewed boxes as a COCO dataset (zip)")
    def export_coco(self, request, queryset):
        return views.export_response(queryset, "coco")

    @admin.action(description="Export the reviewed boxes as YOLO labels (zip)")
    def export_yolo(self, request, queryset):
        return views.export_response(queryset, "yolo")

    # --- pages -----------------------------------------------------------------------------
    def get_urls(self):
        return [*views.JobPages(self).urls(), *actions.ReviewActions(self).urls(),
                *api.ReviewData(self).urls(), *super().get_urls()]

    def _job(self, request, job_id) -> Job:
        return views.visible_job(self, request, job_id)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """The job's review page: its facts here, the rest drawn by review/static/review/
        app.js from ``page_data`` and the first frame's boxes (then from review.api)."""
        job = self._job(request, object_id)
        can_change = self.has_change_permission(request, job)
        frame_index = dashboard.chosen_frame(job, request.GET.get("frame", ""))
        page = api.page_data(job, can_change=can_change)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta, "title": f"{job.kind.capitalize()} job {job.pk}",
            "is_nav_sidebar_enabled": False,  # the picture gets the width
            "job": job, "names": page["names"], "frame_index": frame_index,
            "page_data": page, "frame_data": api.frame_answer(job, frame_index),
            "media": page["media"],
            "labels_present": [lane["label"] for lane in page.get("lanes", ())]
            or sorted(set(Detection.objects.filter(job=job).values_list("label", flat=True))),
            "events": ReviewEvent.objects.filter(job=job).select_related(
                "user", "detection", "added_box")[:api.HISTORY_EVENTS],
            "counts": Detection.objects.filter(job=job).aggregate(total=Count("id")),
            "models": installed_models(),
            "can_change": can_change,
            "reruns": list(job.reruns.all().only("id", "status", "created_at")),
        }
        return TemplateResponse(request, "admin/jobs/job/review.html", context)


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
    list_display = ("hostname", "device", "model_name", "precision", "queues", "models_loaded",
                    "last_seen")


@admin.register(DetectorModel)
class DetectorModelAdmin(admin.ModelAdmin):
    """The registry, to look at (uploads, defaults and deletes go through /api/models,
    which checks them)."""

    list_display = ("name", "version", "is_default", "builtin", "classes", "input_width",
                    "input_height", "letter_box", "created_by", "created_at")
    list_filter = ("builtin", "is_default")
    search_fields = ("name", "notes")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
