"""The video API: submit, detections (cursor-paginated), segments, annotated video, cancel."""

from __future__ import annotations

from django.core.files.storage import default_storage
from django.http import FileResponse
from django_filters.utils import translate_validation
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
)
from rest_framework import generics, serializers, status
from rest_framework.pagination import CursorPagination
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from detection import selectors as job_selectors
from detection.models import Detection, Job
from detection.serializers import (
    BoxSerializer,
    DetectVideoSerializer,
    JobDetailSerializer,
    JobSerializer,
)
from detection.views import _owner, job_detail_response
from pmr.errors import ApiError
from pmr.schema import ERROR_RESPONSES
from videos import selectors, services
from videos.filters import DetectionFilter, SegmentFilter


class DetectVideoView(APIView):
    parser_classes = [MultiPartParser, FormParser]
    throttle_scope = "detect"

    @extend_schema(
        operation_id="detect_video",
        request={"multipart/form-data": DetectVideoSerializer},
        parameters=[OpenApiParameter("Idempotency-Key", OpenApiTypes.STR,
                                     OpenApiParameter.HEADER, description=(
                                         "the same key from the same user returns the same "
                                         "job instead of a new one"))],
        responses={202: JobSerializer, **ERROR_RESPONSES},
        summary="Submit a video for detection, frame by frame",
        description="Checks that the upload is a decodable video within the limits, stores it "
                    "and answers 202 at once; poll status_url (or give callback_url).")
    def post(self, request):
        if "video" not in request.FILES:
            raise ApiError("missing_file", "send the video as the multipart field 'video'")
        serializer = DetectVideoSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        params = dict(serializer.validated_data)
        upload = params.pop("video")
        callback_url = params.pop("callback_url", "") or ""
        key = request.headers.get("Idempotency-Key", "").strip()
        if len(key) > 255:
            raise ApiError("invalid_parameters", "Idempotency-Key is too long",
                           details={"Idempotency-Key": "at most 255 characters"})
        job, _ = services.video_job_submit(owner=_owner(request), upload=upload, params=params,
                                           callback_url=callback_url, idempotency_key=key,
                                           base_url=request.build_absolute_uri("/"))
        data = JobSerializer(job, context={"request": request}).data
        return Response(data, status=status.HTTP_202_ACCEPTED,
                        headers={"Location": data["status_url"]})


class DetectionRowSerializer(serializers.Serializer):
    frame_index = serializers.IntegerField()
    timestamp_ms = serializers.IntegerField()
    label = serializers.CharField()
    class_id = serializers.IntegerField()
    confidence = serializers.SerializerMethodField()
    box = serializers.SerializerMethodField()

    def get_confidence(self, row) -> float:
        return round(row.confidence, 6)

    @extend_schema_field(BoxSerializer())
    def get_box(self, row) -> dict:
        return {"x1": round(row.x1, 2), "y1": round(row.y1, 2), "x2": round(row.x2, 2),
                "y2": round(row.y2, 2)}


class DetectionCursor(CursorPagination):
    ordering = ("frame_index", "-confidence", "id")
    page_size = 500
    page_size_query_param = "page_size"
    max_page_size = 5000


class JobDetectionsView(generics.ListAPIView):
    serializer_class = DetectionRowSerializer
    pagination_class = DetectionCursor
    filterset_class = DetectionFilter
    queryset = Detection.objects.none()  # the schema's model; get_queryset has the job's

    @extend_schema(operation_id="list_job_detections", responses={
        200: DetectionRowSerializer(many=True), **ERROR_RESPONSES},
        summary="A job's detection records, by frame then confidence (cursor-paginated)")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        job = job_selectors.job_get(user=self.request.user, job_id=self.kwargs["job_id"])
        return selectors.video_detections(job=job)


class JobSegmentsView(generics.GenericAPIView):
    filterset_class = SegmentFilter
    queryset = Detection.objects.none()  # the schema's model
    pagination_class = None

    @extend_schema(operation_id="list_job_segments", filters=True,  # SegmentFilter's
                   responses={200: OpenApiTypes.OBJECT, **ERROR_RESPONSES},
                   summary="Per label, the time intervals in which it is present")
    def get(self, request, job_id):
        job = job_selectors.job_get(user=request.user, job_id=job_id)
        if job.kind != Job.Kind.VIDEO:
            raise ApiError("not_a_video_job", "segments exist for video jobs only")
        filterset = SegmentFilter(request.query_params,
                                  queryset=Detection.objects.filter(job=job))
        if not filterset.is_valid():
            raise translate_validation(filterset.errors)
        gap_ms = filterset.form.cleaned_data.get("gap_ms")
        if gap_ms is None:
            gap_ms = selectors.default_gap_ms(job)
        segments = selectors.label_segments(detections=filterset.qs, gap_ms=gap_ms)
        return Response({"job": str(job.pk), "gap_ms": gap_ms, "segments": segments})


class JobAnnotatedView(APIView):
    @extend_schema(operation_id="get_annotated_video",
                   responses={(200, "video/mp4"): OpenApiTypes.BINARY,
                              202: OpenApiResponse(description="being rendered: retry later"),
                              409: OpenApiResponse(description="the job has not succeeded"),
                              **ERROR_RESPONSES},
                   summary="The video with boxes and labels drawn (H.264 MP4)")
    def get(self, request, job_id):
        job = job_selectors.job_get(user=request.user, job_id=job_id)
        if job.kind != Job.Kind.VIDEO:
            raise ApiError("not_a_video_job", "annotated videos exist for video jobs only")
        if job.annotated_file:
            response = FileResponse(default_storage.open(job.annotated_file.name, "rb"),
                                    content_type="video/mp4")
            response["Content-Disposition"] = f'inline; filename="{job.pk}-annotated.mp4"'
            return response
        if job.status != Job.Status.SUCCEEDED:
            raise ApiError("not_ready", f"the job is {job.status}", status_code=409)
        services.annotation_request(job=job)
        return Response({"status": "rendering", "retry_after_s": 5},
                        status=status.HTTP_202_ACCEPTED, headers={"Retry-After": "5"})


class JobCancelView(APIView):
    @extend_schema(operation_id="cancel_job", request=None,
                   responses={200: JobDetailSerializer, 409: OpenApiResponse(
                       description="already finished"), **ERROR_RESPONSES},
                   summary="Cancel a queued or running job")
    def post(self, request, job_id):
        job = job_selectors.job_get(user=request.user, job_id=job_id)
        if job.is_finished:
            raise ApiError("already_finished", f"the job already {job.status}", status_code=409)
        return job_detail_response(request, services.job_cancel(job=job))
