"""What POST /api/detect/video takes."""

from __future__ import annotations

from rest_framework import serializers

from core.outbound import RefusedAddress, check_public
from jobs.serializers import DetectParamsSerializer


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

    def validate(self, data):
        data = super().validate(data)  # the model, and its classes
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
