"""Jobs (one per image or video submitted), the detections they produced, and the live
workers that run them.

``Job`` holds what every job has: its input, parameters, state, lease and timings. What
only some jobs have sits beside it, one-to-one: a video job's ``Video`` (container facts,
progress, annotated copy), a ``Webhook`` for jobs submitted with a callback, and the
review app's ``ReviewMark`` once a reviewer marked the job reviewed."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class Job(models.Model):
    """One image or video submitted for detection (see the module's docstring)."""

    class Kind(models.TextChoices):
        IMAGE = "image"
        VIDEO = "video"

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                              on_delete=models.CASCADE, related_name="jobs")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    params = models.JSONField(default=dict, help_text="the detection parameters used")
    model_name = models.CharField(max_length=64)
    model_version = models.PositiveIntegerField(
        null=True, blank=True, help_text="the version of the model it runs (null: jobs from "
        "before models had versions, which ran the model's first)")
    model_sha256 = models.CharField(max_length=64, blank=True)
    runtime = models.CharField(max_length=16, blank=True,
                               help_text="what ran the forward passes (torch, openvino...)")
    precision = models.CharField(max_length=8, blank=True,
                                 help_text="the precision they ran in (fp32, int8...)")

    input_file = models.FileField(max_length=255, blank=True)
    original_filename = models.CharField(max_length=255, blank=True)
    content_type = models.CharField(max_length=100, blank=True)
    file_size = models.BigIntegerField(default=0)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)

    queue_ms = models.FloatField(null=True, blank=True)
    inference_ms = models.FloatField(null=True, blank=True)
    total_ms = models.FloatField(null=True, blank=True)
    batch_size = models.PositiveIntegerField(null=True, blank=True,
                                             help_text="images in the forward pass")
    worker = models.CharField(max_length=255, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0, help_text="runs started")

    lease_expires = models.DateTimeField(
        null=True, blank=True, help_text="images: by when it must be started (once started: "
        "by when its worker must renew it) before the watchdog requeues it")
    idempotency_key = models.CharField(max_length=255, blank=True)

    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)

    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL,
                               related_name="reruns", help_text="the job this one re-runs")

    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at",)
        indexes = [
            models.Index(fields=["owner", "-created_at"], name="job_owner_created"),
            models.Index(fields=["owner", "kind", "status"], name="job_owner_kind_status"),
            models.Index(fields=["status", "created_at"], name="job_status_created"),
            models.Index(fields=["status", "lease_expires"], name="job_status_lease"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["owner", "idempotency_key"],
                                    condition=~models.Q(idempotency_key=""),
                                    name="job_owner_idempotency_key"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} job {self.id} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED


class Video(models.Model):
    """What a video job knows beyond every job: what its container says, how far
    processing got, and the annotated copy. One per video job (``job.video``)."""

    job = models.OneToOneField(Job, primary_key=True, on_delete=models.CASCADE,
                               related_name="video")
    fps = models.FloatField(null=True, blank=True)
    frame_count = models.PositiveIntegerField(null=True, blank=True)
    duration_ms = models.PositiveBigIntegerField(null=True, blank=True)
    codec = models.CharField(max_length=16, blank=True,
                             help_text="the stream's codec, as FFmpeg names it")
    frames_total = models.PositiveIntegerField(null=True, blank=True,
                                               help_text="frames to process (after stride)")
    frames_done = models.PositiveIntegerField(default=0)
    processing_ms = models.FloatField(default=0, help_text="time spent processing frames")
    annotated_file = models.FileField(max_length=255, blank=True)
    tracks = models.PositiveIntegerField(
        null=True, blank=True, help_text="objects tracked through the video (null: not tracked)")
    tracking_ms = models.FloatField(null=True, blank=True,
                                    help_text="time spent tracking them, as the job finished")
    annotation_requested_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"video of job {self.job_id}"


class Webhook(models.Model):
    """Where to POST a job's JSON when it finishes, and every delivery attempt so far.
    Only jobs submitted with a ``callback_url`` have one (``job.webhook``)."""

    job = models.OneToOneField(Job, primary_key=True, on_delete=models.CASCADE,
                               related_name="webhook")
    url = models.URLField(max_length=2000)
    base_url = models.CharField(max_length=500, blank=True,
                                help_text="the API's address as the submitter saw it: the "
                                          "absolute URLs in the body")
    log = models.JSONField(default=list, blank=True)

    def __str__(self) -> str:
        return f"webhook of job {self.job_id} to {self.url}"


def webhook_of(job: Job) -> Webhook | None:
    """The job's webhook, or None if it was submitted without a callback_url."""
    try:
        return job.webhook
    except Webhook.DoesNotExist:
        return None


class Detection(models.Model):
    """One (box, class) the model found; review fields sit beside, never over, it."""

    class Review(models.TextChoices):
        UNREVIEWED = "unreviewed"
        CONFIRMED = "confirmed"
        REJECTED = "rejected"
        RELABELLED = "relabelled"

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="detections")
    frame_index = models.PositiveIntegerField(default=0)
    timestamp_ms = models.PositiveBigIntegerField(default=0)
    class_id = models.PositiveSmallIntegerField()
    label = models.CharField(max_length=64)
    confidence = models.FloatField()
    x1 = models.FloatField()
    y1 = models.FloatField()
    x2 = models.FloatField()
    y2 = models.FloatField()
    track_id = models.PositiveIntegerField(
        null=True, blank=True, help_text="the object it belongs to, within its video job (null: "
        "images, untracked videos, and boxes no track took)")

    review_status = models.CharField(max_length=16, choices=Review.choices,
                                     default=Review.UNREVIEWED)
    review_label = models.CharField(max_length=64, blank=True, help_text="when relabelled")
    review_class_id = models.PositiveSmallIntegerField(null=True, blank=True)
    reviewed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                    on_delete=models.SET_NULL, related_name="+")
    reviewed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("job", "frame_index", "-confidence", "id")
        indexes = [
            models.Index(fields=["job", "frame_index", "-confidence"], name="det_job_frame"),
            models.Index(fields=["job", "label", "frame_index"], name="det_job_label_frame"),
            models.Index(fields=["job", "track_id", "frame_index"], name="det_job_track_frame",
                         condition=models.Q(track_id__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"{self.label} {self.confidence:.2f} @ frame {self.frame_index}"


class Track(models.Model):
    """One object followed through a video job: what its boxes (the detections with its
    ``track_id``) say about it, kept in step with them (``jobs.services.tracks_refresh``)
    so that listing and filtering tracks reads one row each."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="tracks")
    track_id = models.PositiveIntegerField()
    class_id = models.PositiveSmallIntegerField()
    label = models.CharField(max_length=64)
    first_frame = models.PositiveIntegerField()
    last_frame = models.PositiveIntegerField()
    first_ms = models.PositiveBigIntegerField()
    last_ms = models.PositiveBigIntegerField()
    duration_ms = models.PositiveBigIntegerField()
    frames = models.PositiveIntegerField(help_text="frames it has a box in")
    max_confidence = models.FloatField()
    mean_confidence = models.FloatField()
    first_box = models.JSONField(help_text="x1, y1, x2, y2")
    last_box = models.JSONField(help_text="x1, y1, x2, y2")

    class Meta:
        ordering = ("job", "track_id")
        constraints = [models.UniqueConstraint(fields=["job", "track_id"], name="track_job_id")]
        indexes = [models.Index(fields=["job", "label", "first_ms"], name="track_job_label"),
                   models.Index(fields=["job", "first_ms"], name="track_job_first")]

    def __str__(self) -> str:
        return f"track {self.track_id} ({self.label}) of {self.job_id}"


def model_storage_name(name: str, version: int, filename: str) -> str:
    return f"models/{name}/{version}/{filename}"


class DetectorModel(models.Model):
    """One version of a detector that jobs may run: its darknet cfg, weights and class
    names (the sha256 of each), with what the web tier needs to check a request without
    reading them (class names, input size). Uploaded models' files are in the project's
    storage (``models/<name>/<version>/``); a built-in model's (``builtin``) are the ones
    ``fetch_weights`` put in WEIGHTS_DIR. The same files under a name are the same
    version; new files under a name are a new version."""

    name = models.CharField(max_length=64)
    version = models.PositiveIntegerField()
    is_default = models.BooleanField(default=False,
                                     help_text="the version a request naming only the model runs")
    builtin = models.BooleanField(default=False, help_text="files in WEIGHTS_DIR, not storage")
    cfg_file = models.CharField(max_length=255, blank=True)
    weights_file = models.CharField(max_length=255, blank=True)
    names_file = models.CharField(max_length=255, blank=True)
    cfg_sha256 = models.CharField(max_length=64)
    weights_sha256 = models.CharField(max_length=64)
    names_sha256 = models.CharField(max_length=64)
    weights_size = models.BigIntegerField(default=0)
    classes = models.PositiveIntegerField()
    class_names = models.JSONField(default=list)
    input_width = models.PositiveIntegerField()
    input_height = models.PositiveIntegerField()
    input_size_set = models.BooleanField(
        default=False, help_text="the input size was given at upload (else: the cfg's)")
    letter_box = models.BooleanField(default=True,
                                     help_text="letterboxed (else stretched) to the input")
    notes = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("name", "-version")
        constraints = [
            models.UniqueConstraint(fields=["name", "version"], name="model_name_version"),
            models.UniqueConstraint(fields=["name"], condition=models.Q(is_default=True),
                                    name="model_one_default"),
        ]

    def __str__(self) -> str:
        return self.ref

    @property
    def ref(self) -> str:
        """How a request names exactly this version: ``name@version``."""
        return f"{self.name}@{self.version}"


class WorkerHeartbeat(models.Model):
    """A live Celery worker, as it last reported itself (for /readyz and the admin)."""

    hostname = models.CharField(max_length=255, unique=True)
    pid = models.PositiveIntegerField()
    device = models.CharField(max_length=64)
    model_name = models.CharField(max_length=64)
    precision = models.CharField(max_length=8)
    queues = models.CharField(max_length=255, blank=True)
    models_loaded = models.JSONField(default=list, blank=True,
                                     help_text="the models (name@version) it holds loaded")
    started_at = models.DateTimeField()
    last_seen = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"{self.hostname} ({self.device})"
