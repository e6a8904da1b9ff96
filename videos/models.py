"""A video job is processed in parts: ranges of frames that workers take in parallel."""

from __future__ import annotations

from django.db import models

from jobs.models import Job


class VideoPart(models.Model):
    """Frames [start_frame, end_frame) of a video job, processed by one task at a time.

    The heartbeat of the worker holding the part renews its lease while the task runs;
    a lapsed lease means the worker died, and the watchdog gives the part to a new task,
    which resumes at ``next_frame``. ``progressed_at`` is when the task last committed a
    batch: a live task that commits none for STALL_SECONDS is stalled, and the part is
    taken from it the same way.
    """

    class Requeued(models.TextChoices):
        WORKER_LOST = "worker_lost", "its worker died"
        STALLED = "stalled", "it made no progress"

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
    progressed_at = models.DateTimeField(
        null=True, blank=True, help_text="when its task was given it or last committed a batch")
    requeued_because = models.CharField(max_length=16, choices=Requeued.choices, blank=True,
                                        help_text="why it was last sent to a new task")

    class Meta:
        ordering = ("job", "index")
        constraints = [models.UniqueConstraint(fields=["job", "index"], name="part_job_index")]
        indexes = [models.Index(fields=["status", "lease_expires"], name="part_status_lease")]

    def __str__(self) -> str:
        end = self.end_frame if self.end_frame is not None else "end"
        return f"part {self.index} [{self.start_frame}, {end}) of {self.job_id}"
