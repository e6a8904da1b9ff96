"""What reviewers add to a job's results: boxes the model missed, the mark that a job was
reviewed, and the history of every review change. The review fields of a detection sit on
``jobs.Detection`` itself."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from jobs.models import Detection, Job


class AddedBox(models.Model):
    """A box a reviewer drew: something the model missed."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="added_boxes")
    frame_index = models.PositiveIntegerField(default=0)
    timestamp_ms = models.PositiveBigIntegerField(default=0)
    class_id = models.PositiveSmallIntegerField()
    label = models.CharField(max_length=64)
    x1 = models.FloatField()
    y1 = models.FloatField()
    x2 = models.FloatField()
    y2 = models.FloatField()
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True,
                                   on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    removed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("job", "frame_index", "id")
        indexes = [models.Index(fields=["job", "frame_index"], name="addedbox_job_frame")]

    def __str__(self) -> str:
        return f"added {self.label} @ frame {self.frame_index}"


class ReviewMark(models.Model):
    """A job marked reviewed: by whom and when (``job.review_mark``)."""

    job = models.OneToOneField(Job, primary_key=True, on_delete=models.CASCADE,
                               related_name="review_mark")
    reviewed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                    on_delete=models.SET_NULL, related_name="+")
    reviewed_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"job {self.job_id} reviewed by {self.reviewed_by} at {self.reviewed_at}"


class ReviewEvent(models.Model):
    """One review change, as it happened: who, when, what. Never edited, never deleted."""

    class Action(models.TextChoices):
        CONFIRM = "confirm"
        REJECT = "reject"
        RELABEL = "relabel"
        RESET = "reset"
        ADD_BOX = "add_box"
        REMOVE_BOX = "remove_box"
        MARK_REVIEWED = "mark_reviewed"
        RERUN = "rerun"
        MERGE_TRACKS = "merge_tracks"
        SPLIT_TRACK = "split_track"

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="review_events")
    detection = models.ForeignKey(Detection, null=True, blank=True, on_delete=models.CASCADE,
                                  related_name="review_events")
    added_box = models.ForeignKey(AddedBox, null=True, blank=True, on_delete=models.CASCADE,
                                  related_name="review_events")
    action = models.CharField(max_length=16, choices=Action.choices)
    details = models.JSONField(default=dict, blank=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL,
                             related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("-created_at", "-id")
        indexes = [models.Index(fields=["job", "-created_at"], name="review_job_created")]

    def __str__(self) -> str:
        return f"{self.action} by {self.user} at {self.created_at:%Y-%m-%d %H:%M}"


class ModelScoring(models.Model):
    """Models scored on the reviewed data (``manage.py evaluate --reviewed``, or the
    dashboard's scores page): run on a worker, with its progress; the result holds each
    model's scores side by side (``engine.scoring``)."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    model_refs = models.JSONField(default=list,
                                  help_text="the model versions scored (name@version)")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    images_total = models.PositiveIntegerField(default=0,
                                               help_text="reviewed images x models to run")
    images_done = models.PositiveIntegerField(default=0)
    result = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    worker = models.CharField(max_length=255, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at",)

    def __str__(self) -> str:
        return f"scores of {', '.join(self.model_refs)} ({self.status})"

    @property
    def percent(self) -> float | None:
        return round(100 * self.images_done / self.images_total, 1) if self.images_total \
            else None
