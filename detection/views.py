"""The image detection and job API. Views validate, call one service, serialize."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from detection import selectors, services
from detection.filters import JobFilter
from detection.models import Job
from detection.serializers import (
    DetectImageSerializer,
    JobDetailSerializer,
    JobListSerializer,
    JobSerializer,
)
from pmr.errors import ApiError
from pmr.schema import ERROR_RESPONSES


def _owner(request):
    return request.user if request.user.is_authenticated else None


def job_detail_response(request, job: Job, *, status_code: int = status.HTTP_200_OK,
                        headers: dict | None = None) -> Response:
    data = JobDetailSerializer(job, context={
        "request": request, "detections": selectors.job_detections(job=job)}).data
    return Response(data, status=status_code, headers=headers)


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
        job, finished = services.image_job_detect(owner=_owner(request), upload=upload,
                                                  params=params,
                                                  timeout=settings.DETECT_WAIT_SECONDS)
        location = {"Location": request.build_absolute_uri(f"/api/jobs/{job.pk}")}
        if not finished:
            return Response(JobSerializer(job, context={"request": request}).data,
                            status=status.HTTP_202_ACCEPTED, headers=location)
        return job_detail_response(request, job, status_code=status.HTTP_201_CREATED,
                                   headers=location)


class JobListView(generics.ListAPIView):
    serializer_class = JobListSerializer
    filterset_class = JobFilter
    queryset = Job.objects.none()  # the schema's model; get_queryset has the caller's

    @extend_schema(operation_id="list_jobs",
                   responses={200: JobListSerializer(many=True), **ERROR_RESPONSES},
                   summary="The caller's jobs, newest first")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        return selectors.job_list(user=self.request.user)


class JobDetailView(APIView):
    @extend_schema(operation_id="get_job", responses={200: JobDetailSerializer,
                                                      **ERROR_RESPONSES},
                   summary="A job with its detections")
    def get(self, request, job_id):
        return job_detail_response(request, selectors.job_get(user=request.user, job_id=job_id))

    @extend_schema(operation_id="delete_job", responses={204: None, **ERROR_RESPONSES},
                   summary="Delete a job, its detections and its files")
    def delete(self, request, job_id):
        services.job_delete(job=selectors.job_get(user=request.user, job_id=job_id))
        return Response(status=status.HTTP_204_NO_CONTENT)
