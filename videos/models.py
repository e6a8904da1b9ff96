"""A video job is processed in parts: ranges of frames that workers take in parallel."""

from __future__ import annotations

from django.db import models

from detection.models import Job


class VideoPart(models.Model):
    """Frames [start_frame, end_frame) of a video job, processed by one task at a time.

    The task holding the part renews its lease with every batch it commits (with the
    batch's detections and the progress); a lapsed lease means the worker died, and the
    watchdog gives the part to a new task, which resumes at ``next_frame``.
    """

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="parts")
    index = models.PositiveSmallIntegerField()
    start_frame = models.PositiveIntegerField()
    end_frame = models.PositiveIntegerField(null=True, blank=True,
                                            help_text="exclusive; empty: the end of the video")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.QUEUED)
    next_frame = models.PositiveIntegerField(help_text="source frame to resume from")
    frames_done = models.PositiveIntegerField(default=0)
    frames_read = models.PositiveIntegerField(null=True, blank=True,
                                              help_text="where decoding ended")
    attempts = models.PositiveSmallIntegerField(default=0)
    lease_owner = models.CharField(max_length=255, blank=True)
    lease_expires = models.DateTimeField(
        help_text="by when the part must be claimed or renewed before it is requeued")
    worker = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ("job", "index")
        constraints = [models.UniqueConstraint(fields=["job", "index"], name="part_job_index")]
        indexes = [models.Index(fields=["status", "lease_expires"], name="part_status_lease")]

    def __str__(self) -> str:
        end = self.end_frame if self.end_frame is not None else "end"
        return f"part {self.index} [{self.start_frame}, {end}) of {self.job_id}"
