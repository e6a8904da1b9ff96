"""What POST /api/detect/video takes, and a video job's tracks as the API gives them."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.outbound import RefusedAddress, check_public
from jobs.serializers import BoxSerializer, DetectParamsSerializer, box_of


class DetectVideoSerializer(DetectParamsSerializer):
    video = serializers.FileField(allow_empty_file=True, help_text="the video file")
    max_detections = serializers.IntegerField(required=False, default=100, min_value=1,
                                              max_value=10_000, help_text="per frame")
    frame_stride = serializers.IntegerField(required=False, min_value=1, max_value=100_000,
                                            help_text="process every Nth frame (default 1)")
    sample_fps = serializers.FloatField(required=False, min_value=0.001, max_value=1000,
                                        help_text="or: process about this many frames a second")
    callback_url = serializers.URLField(required=False, allow_blank=True, max_length=2000,
                                        help_text="POSTed the job's JSON when it finishes")
    annotate = serializers.BooleanField(required=False, default=False,
                                        help_text="also render the annotated video")
    tracking = serializers.BooleanField(
        required=False, default=True,
        help_text="follow each object through the video: track ids, tracks, unique counts")
    track_buffer_ms = serializers.IntegerField(
        required=False, min_value=0, max_value=60_000,
        help_text="how long a lost object's track waits for it to reappear (default: "
                  "TRACK_BUFFER_MS, 1000)")
    track_activation_threshold = serializers.FloatField(
        required=False, min_value=0.0, max_value=1.0,
        help_text="the least confidence of a box that starts a track (default: "
                  "TRACK_ACTIVATION_THRESHOLD, 0.5)")

    def validate(self, data):
        data = super().validate(data)  # the model, and its classes
        if not data.get("tracking"):
            for name in ("track_buffer_ms", "track_activation_threshold"):
                if name in data:
                    raise serializers.ValidationError({name: "only with tracking=true"})
        if data.get("frame_stride") and data.get("sample_fps"):
            raise serializers.ValidationError({"sample_fps": "give frame_stride or sample_fps, "
                                                             "not both"})
        url = data.get("callback_url")
        if url and not url.startswith(("http://", "https://")):
            raise serializers.ValidationError({"callback_url": "must be http(s)"})
        if url:
            try:
                check_public(url)
            except RefusedAddress as exc:
                raise serializers.ValidationError({"callback_url": str(exc)}) from exc
        return data


class TrackSerializer(serializers.Serializer):
    """One object followed through a video."""

    track_id = serializers.IntegerField()
    label = serializers.CharField()
    class_id = serializers.IntegerField()
    first_ms = serializers.IntegerField(help_text="when it is first seen")
    last_ms = serializers.IntegerField(help_text="when it is last seen")
    duration_ms = serializers.IntegerField()
    first_frame = serializers.IntegerField()
    last_frame = serializers.IntegerField()
    frames = serializers.IntegerField(help_text="processed frames it has a box in")
    max_confidence = serializers.SerializerMethodField()
    mean_confidence = serializers.SerializerMethodField()
    first_box = serializers.SerializerMethodField()
    last_box = serializers.SerializerMethodField()

    def get_max_confidence(self, track) -> float:
        return round(track.max_confidence, 6)

    def get_mean_confidence(self, track) -> float:
        return round(track.mean_confidence, 6)

    @extend_schema_field(BoxSerializer())
    def get_first_box(self, track) -> dict:
        return dict(zip(("x1", "y1", "x2", "y2"), track.first_box, strict=True))

    @extend_schema_field(BoxSerializer())
    def get_last_box(self, track) -> dict:
        return dict(zip(("x1", "y1", "x2", "y2"), track.last_box, strict=True))


class TrackBoxSerializer(serializers.Serializer):
    frame_index = serializers.IntegerField()
    timestamp_ms = serializers.IntegerField()
    confidence = serializers.FloatField()
    box = BoxSerializer()
    review_status = serializers.CharField()


class TrackDetailSerializer(TrackSerializer):
    boxes = serializers.SerializerMethodField()

    @extend_schema_field(TrackBoxSerializer(many=True))
    def get_boxes(self, track) -> list[dict]:
        """The track's box in every frame it is in, by frame."""
        return [{"frame_index": row.frame_index, "timestamp_ms": row.timestamp_ms,
                 "confidence": round(row.confidence, 6), "box": box_of(row),
                 "review_status": row.review_status}
                for row in self.context["boxes"]]
