"""The image API: detect objects in an image (and wait for the answer)."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from core.errors import ApiError
from core.schema import ERROR_RESPONSES
from images import services
from images.serializers import DetectImageSerializer
from jobs.serializers import JobDetailSerializer, JobSerializer
from jobs.views import job_detail_response, request_owner


class DetectImageView(APIView):
    parser_classes = [MultiPartParser, FormParser]
    throttle_scope = "detect"

    @extend_schema(
        operation_id="detect_image",
        request={"multipart/form-data": DetectImageSerializer},
        responses={201: JobDetailSerializer,
                   202: OpenApiResponse(JobSerializer, description="still running: poll "
                                        "status_url"),
                   **ERROR_RESPONSES},
        summary="Detect objects in an image",
        description="Waits (up to DETECT_WAIT_SECONDS) for a worker to run the detector and "
                    "returns the stored job with its detections; if the wait runs out, 202 "
                    "with the job's URL.")
    def post(self, request):
        if "image" not in request.FILES:
            raise ApiError("missing_file", "send the image as the multipart field 'image'")
        serializer = DetectImageSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        params = dict(serializer.validated_data)
        upload = params.pop("image")
        model = params.pop("model")
        job, finished = services.image_job_detect(owner=request_owner(request), upload=upload,
                                                  params=params, model=model,
                                                  timeout=settings.DETECT_WAIT_SECONDS)
        location = {"Location": request.build_absolute_uri(f"/api/jobs/{job.pk}")}
        if not finished:
            return Response(JobSerializer(job, context={"request": request}).data,
                            status=status.HTTP_202_ACCEPTED, headers=location)
        return job_detail_response(request, job, status_code=status.HTTP_201_CREATED,
                                   headers=location)
