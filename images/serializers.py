"""What POST /api/detect/image takes."""

from __future__ import annotations

from rest_framework import serializers

from jobs.serializers import DetectParamsSerializer


class DetectImageSerializer(DetectParamsSerializer):
    image = serializers.FileField(allow_empty_file=True, help_text="the image file")
