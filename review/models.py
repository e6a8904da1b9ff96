"""What reviewers add to a job's results: boxes the model missed, the mark that a job was
reviewed, and the history of every review change. The review fields of a detection sit on
``jobs.Detection`` itself."""

from __future__ import annotations

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
