"""The job API's shapes: the detection parameters every kind takes, and jobs, detections and
their parts as the API gives them."""

from __future__ import annotations

from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.errors import ApiError
from engine import Detection as EngineDetection
from jobs import catalog
from jobs.models import Detection, Job, webhook_of
from jobs.selectors import label_summary, track_parameters


class StrictSerializer(serializers.Serializer):
    """Unknown fields are an error, so that a misspelt parameter is never ignored."""

    def to_internal_value(self, data):
        unknown = sorted(set(getattr(data, "keys", dict)()) - set(self.fields))
        if unknown:
            raise serializers.ValidationError({name: "unknown parameter" for name in unknown})
        return super().to_internal_value(data)


class DetectParamsSerializer(StrictSerializer):
    min_confidence = serializers.FloatField(required=False, default=0.25, min_value=0.0,
                                            max_value=0.999)
    iou_threshold = serializers.FloatField(required=False, default=0.45, min_value=0.01,
                                           max_value=1.0)
    classes = serializers.CharField(
        required=False, allow_blank=True, default="",
        help_text="comma-separated class names to keep, e.g. person,car (default: all)")
    max_detections = serializers.IntegerField(required=False, default=100, min_value=1,
                                              max_value=10_000)
    model = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=80,
        help_text="the model to run: NAME (its default version) or NAME@VERSION, as "
                  "GET /api/models lists them (default: the service's DETECTOR_MODEL)")

    def validate_classes(self, value: str) -> list[str] | None:
        """The names asked for (None: all); checked against the model's in validate."""
        return [item.strip() for item in value.split(",") if item.strip()] or None

    def validate_model(self, value: str) -> catalog.Choice:
        try:
            return catalog.resolve(value or None)
        except ApiError as exc:
            raise serializers.ValidationError(exc.message) from None

    def validate(self, attrs: dict) -> dict:
        """The classes asked for must be the chosen model's."""
        attrs = super().validate(attrs)
        choice = attrs.get("model") or catalog.resolve(None)
        attrs["model"] = choice
        wanted = attrs.get("classes") or []
        if not wanted:
            attrs["classes"] = None
            return attrs
        known = choice.class_names
        unknown = [name for name in wanted if name not in known]
        if unknown:
            raise serializers.ValidationError({"classes": (
                f"unknown classes for model {choice.ref}: {', '.join(unknown)} "
                f"(known: {', '.join(known)})")})
        attrs["classes"] = sorted(set(wanted), key=known.index)
        return attrs


class BoxSerializer(serializers.Serializer):
    x1 = serializers.FloatField()
    y1 = serializers.FloatField()
    x2 = serializers.FloatField()
    y2 = serializers.FloatField()


def box_of(row) -> dict:
    """A detection record's box as the API gives it (BoxSerializer's shape)."""
    return {"x1": round(row.x1, 2), "y1": round(row.y1, 2), "x2": round(row.x2, 2),
            "y2": round(row.y2, 2)}


class DetectionOutputSerializer(serializers.Serializer):
    label = serializers.CharField()
    class_id = serializers.IntegerField()
    confidence = serializers.FloatField()
    box = BoxSerializer()


class DetectionRowSerializer(serializers.Serializer):
    frame_index = serializers.IntegerField()
    timestamp_ms = serializers.IntegerField()
    label = serializers.CharField()
    class_id = serializers.IntegerField()
    confidence = serializers.SerializerMethodField()
    box = serializers.SerializerMethodField()
    track_id = serializers.IntegerField(allow_null=True, help_text=(
        "the object it belongs to (GET .../tracks/{track_id}); null for images, untracked "
        "videos and boxes no track took"))

    def get_confidence(self, row) -> float:
        return round(row.confidence, 6)

    @extend_schema_field(BoxSerializer())
    def get_box(self, row) -> dict:
        return box_of(row)


class ImageSizeSerializer(serializers.Serializer):
    width = serializers.IntegerField()
    height = serializers.IntegerField()


class ModelInfoSerializer(serializers.Serializer):
    name = serializers.CharField()
    version = serializers.IntegerField(allow_null=True, help_text="the model version it ran")
    sha256 = serializers.CharField(allow_null=True)
    runtime = serializers.CharField(allow_null=True,
                                    help_text="what answered: torch, openvino or onnxruntime")
    precision = serializers.CharField(allow_null=True, help_text="fp32, bf16, fp16 or int8")
    resize = serializers.CharField(allow_null=True, help_text=(
        "how images were brought to the network's size: letterbox (aspect kept) or stretch, "
        "as the model's cfg says ([net] letter_box)"))


class TimingSerializer(serializers.Serializer):
    queue_ms = serializers.FloatField(allow_null=True)
    inference_ms = serializers.FloatField(allow_null=True)
    total_ms = serializers.FloatField(allow_null=True)
    batch_size = serializers.IntegerField(allow_null=True)
    processing_ms = serializers.FloatField(required=False, help_text="videos")
    frames_per_second = serializers.FloatField(required=False, allow_null=True,
                                               help_text="videos: processing speed")
    tracking_ms = serializers.FloatField(required=False, allow_null=True,
                                         help_text="videos: time spent tracking the objects")


class ErrorInfoSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()


def detection_dict(row: Detection) -> dict:
    """The same shape, and rounding, as `manage.py detect` prints."""
    return EngineDetection(row.class_id, row.label, row.confidence, row.x1, row.y1, row.x2,
                           row.y2).as_dict()


class VideoInfoSerializer(serializers.Serializer):
    width = serializers.IntegerField()
    height = serializers.IntegerField()
    fps = serializers.FloatField()
    frames = serializers.IntegerField()
    duration_ms = serializers.IntegerField()


class ProgressSerializer(serializers.Serializer):
    frames_done = serializers.IntegerField()
    frames_total = serializers.IntegerField(allow_null=True)
    percent = serializers.FloatField(allow_null=True)


class LabelSummarySerializer(serializers.Serializer):
    label = serializers.CharField()
    count = serializers.IntegerField(help_text="boxes")
    objects = serializers.IntegerField(allow_null=True,
                                       help_text="tracks: unique objects (null: not tracked)")
    max_confidence = serializers.FloatField()
    first_ms = serializers.IntegerField()
    last_ms = serializers.IntegerField()


class TrackingSerializer(serializers.Serializer):
    enabled = serializers.BooleanField(help_text="submitted with tracking=true")
    tracks = serializers.IntegerField(allow_null=True,
                                      help_text="objects tracked (null: not tracked yet)")
    buffer_ms = serializers.IntegerField(allow_null=True)
    activation_threshold = serializers.FloatField(allow_null=True)


class VideoPartSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    start_frame = serializers.IntegerField()
    end_frame = serializers.IntegerField(allow_null=True)
    status = serializers.CharField()
    frames_done = serializers.IntegerField()
    attempts = serializers.IntegerField()
    worker = serializers.CharField()
    requeued_because = serializers.CharField(
        help_text="why it was last given to a new task: worker_lost (its worker stopped "
                  "beating), stalled (no batch committed for STALL_SECONDS); empty if never")


class WebhookSerializer(serializers.Serializer):
    url = serializers.URLField()
    attempts = serializers.ListField(child=serializers.DictField())


def _absolute(context: dict, path: str) -> str:
    """An absolute URL: from the request, else from ``base_url`` (a webhook's body)."""
    request = context.get("request")
    if request is not None:
        return request.build_absolute_uri(path)
    base = context.get("base_url", "")
    return f"{base.rstrip('/')}{path}" if base else path


class JobSerializer(serializers.ModelSerializer):
    status_url = serializers.SerializerMethodField()
    review_url = serializers.SerializerMethodField(
        help_text="the job's page in the review dashboard (staff only)")
    image = serializers.SerializerMethodField()
    video = serializers.SerializerMethodField()
    progress = serializers.SerializerMethodField()
    model = serializers.SerializerMethodField()
    timing = serializers.SerializerMethodField()
    error = serializers.SerializerMethodField()

    class Meta:
        model = Job
        fields = ("id", "kind", "status", "status_url", "review_url", "created_at", "started_at",
                  "finished_at", "original_filename", "image", "video", "progress", "model",
                  "params", "timing", "error")

    @extend_schema_field(serializers.URLField())
    def get_status_url(self, job: Job) -> str:
        return _absolute(self.context, reverse("job-detail", args=[job.pk]))

    @extend_schema_field(serializers.URLField())
    def get_review_url(self, job: Job) -> str:
        return _absolute(self.context, reverse("admin:jobs_job_change", args=[job.pk]))

    @extend_schema_field(ImageSizeSerializer(allow_null=True))
    def get_image(self, job: Job) -> dict | None:
        if job.kind != Job.Kind.IMAGE:
            return None
        return {"width": job.width, "height": job.height}

    @extend_schema_field(VideoInfoSerializer(allow_null=True))
    def get_video(self, job: Job) -> dict | None:
        if job.kind != Job.Kind.VIDEO:
            return None
        video = job.video
        return {"width": job.width, "height": job.height, "fps": video.fps,
                "frames": video.frame_count, "duration_ms": video.duration_ms}

    @extend_schema_field(ProgressSerializer(allow_null=True))
    def get_progress(self, job: Job) -> dict | None:
        if job.kind != Job.Kind.VIDEO:
            return None
        done, total = job.video.frames_done, job.video.frames_total
        percent = round(100 * done / total, 2) if total else None
        return {"frames_done": done, "frames_total": total, "percent": percent}

    @extend_schema_field(ModelInfoSerializer())
    def get_model(self, job: Job) -> dict:
        return {"name": job.model_name, "version": job.model_version,
                "sha256": job.model_sha256 or None,
                "runtime": job.runtime or None, "precision": job.precision or None,
                "resize": catalog.resize_of(job)}

    @extend_schema_field(TimingSerializer())
    def get_timing(self, job: Job) -> dict:
        timing = {"queue_ms": _round(job.queue_ms), "inference_ms": _round(job.inference_ms),
                  "total_ms": _round(job.total_ms), "batch_size": job.batch_size}
        if job.kind == Job.Kind.VIDEO:
            video = job.video
            seconds = video.processing_ms / 1000
            timing["processing_ms"] = _round(video.processing_ms)
            timing["frames_per_second"] = (round(video.frames_done / seconds, 2) if seconds
                                           else None)
            timing["tracking_ms"] = _round(video.tracking_ms)
        return timing

    @extend_schema_field(ErrorInfoSerializer(allow_null=True))
    def get_error(self, job: Job) -> dict | None:
        if not job.error_code:
            return None
        return {"code": job.error_code, "message": job.error_message}


class JobListSerializer(JobSerializer):
    detection_count = serializers.IntegerField(read_only=True)

    class Meta(JobSerializer.Meta):
        fields = (*JobSerializer.Meta.fields, "detection_count")


class JobDetailSerializer(JobSerializer):
    """A job with its results: an image's detections inline; a video's summary and links."""

    detections = serializers.SerializerMethodField()
    detections_url = serializers.SerializerMethodField()
    segments_url = serializers.SerializerMethodField()
    tracks_url = serializers.SerializerMethodField()
    annotated_url = serializers.SerializerMethodField()
    tracking = serializers.SerializerMethodField()
    summary = serializers.SerializerMethodField()
    parts = serializers.SerializerMethodField()
    webhook = serializers.SerializerMethodField()

    class Meta(JobSerializer.Meta):
        fields = (*JobSerializer.Meta.fields, "detections", "detections_url", "segments_url",
                  "tracks_url", "annotated_url", "tracking", "summary", "parts", "webhook")

    @extend_schema_field(DetectionOutputSerializer(many=True, allow_null=True))
    def get_detections(self, job: Job) -> list[dict] | None:
        if job.kind != Job.Kind.IMAGE:
            return None
        return [detection_dict(row) for row in self.context["detections"]]

    @extend_schema_field(serializers.URLField(allow_null=True))
    def get_detections_url(self, job: Job) -> str | None:
        if job.kind != Job.Kind.VIDEO:
            return None
        return _absolute(self.context, reverse("job-detections", args=[job.pk]))

    @extend_schema_field(serializers.URLField(allow_null=True))
    def get_segments_url(self, job: Job) -> str | None:
        if job.kind != Job.Kind.VIDEO:
            return None
        return _absolute(self.context, reverse("job-segments", args=[job.pk]))

    @extend_schema_field(serializers.URLField(allow_null=True))
    def get_tracks_url(self, job: Job) -> str | None:
        if job.kind != Job.Kind.VIDEO or not job.params.get("tracking"):
            return None
        return _absolute(self.context, reverse("job-tracks", args=[job.pk]))

    @extend_schema_field(TrackingSerializer(allow_null=True))
    def get_tracking(self, job: Job) -> dict | None:
        """Videos: whether objects are tracked, how many, with which parameters."""
        if job.kind != Job.Kind.VIDEO:
            return None
        enabled = bool(job.params.get("tracking"))
        buffer_ms, activation = track_parameters(job.params) if enabled else (None, None)
        return {"enabled": enabled, "tracks": job.video.tracks, "buffer_ms": buffer_ms,
                "activation_threshold": activation}

    @extend_schema_field(serializers.URLField(allow_null=True))
    def get_annotated_url(self, job: Job) -> str | None:
        if job.kind != Job.Kind.VIDEO:
            return None
        return _absolute(self.context, reverse("job-annotated", args=[job.pk]))

    @extend_schema_field(LabelSummarySerializer(many=True, allow_null=True))
    def get_summary(self, job: Job) -> list[dict] | None:
        if job.kind != Job.Kind.VIDEO:
            return None
        return label_summary(job=job)

    @extend_schema_field(VideoPartSerializer(many=True, allow_null=True))
    def get_parts(self, job: Job) -> list[dict] | None:
        """A video's frame ranges, processed in parallel by the workers."""
        if job.kind != Job.Kind.VIDEO:
            return None
        return VideoPartSerializer(job.parts.all(), many=True).data

    @extend_schema_field(WebhookSerializer(allow_null=True))
    def get_webhook(self, job: Job) -> dict | None:
        webhook = webhook_of(job)
        if webhook is None:
            return None
        return {"url": webhook.url, "attempts": webhook.log}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
