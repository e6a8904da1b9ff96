"""The job API every kind of job has: list, detail, delete, cancel, detections, segments.
Views validate, call one service or selector, serialize."""

from __future__ import annotations

from django_filters.utils import translate_validation
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response
from rest_framework.views import APIView

from core.errors import ApiError
from core.schema import ERROR_RESPONSES
from jobs import selectors, services
from jobs.filters import DetectionFilter, JobFilter, SegmentFilter
from jobs.models import Detection, Job
from jobs.serializers import DetectionRowSerializer, JobDetailSerializer, JobListSerializer


def request_owner(request):
    """Whom a new job belongs to: the caller, or nobody (anonymous, where allowed)."""
    return request.user if request.user.is_authenticated else None


def job_detail_response(request, job: Job, *, status_code: int = status.HTTP_200_OK,
                        headers: dict | None = None) -> Response:
    data = JobDetailSerializer(job, context={
        "request": request, "detections": selectors.job_detections(job=job)}).data
    return Response(data, status=status_code, headers=headers)


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
        job = selectors.job_get(user=self.request.user, job_id=self.kwargs["job_id"])
        return selectors.job_detections(job=job)


class JobSegmentsView(generics.GenericAPIView):
    filterset_class = SegmentFilter
    queryset = Detection.objects.none()  # the schema's model
    pagination_class = None

    @extend_schema(operation_id="list_job_segments", filters=True,  # SegmentFilter's
                   responses={200: OpenApiTypes.OBJECT, **ERROR_RESPONSES},
                   summary="Per label, the time intervals in which it is present")
    def get(self, request, job_id):
        job = selectors.job_get(user=request.user, job_id=job_id)
        if job.kind != Job.Kind.VIDEO:
            raise ApiError("not_a_video_job", "segments exist for video jobs only")
        filterset = SegmentFilter(request.query_params,
                                  queryset=Detection.objects.filter(job=job))
        if not filterset.is_valid():
            raise translate_validation(filterset.errors)
        gap_ms = filterset.form.cleaned_data.get("gap_ms")
        if gap_ms is None:
            gap_ms = selectors.default_gap_ms(job)
        by = filterset.form.cleaned_data.get("by") or "label"
        if by == "track":
            require_tracks(job)
        segments = selectors.label_segments(detections=filterset.qs, gap_ms=gap_ms,
                                            by_track=by == "track")
        return Response({"job": str(job.pk), "gap_ms": gap_ms, "by": by,
                         "segments": segments})


def require_tracks(job: Job) -> None:
    """409 unless the video job's objects are tracked."""
    if job.kind != Job.Kind.VIDEO:
        raise ApiError("not_a_video_job", "tracks exist for video jobs only")
    if job.video.tracks is not None:
        return
    if not job.params.get("tracking"):
        raise ApiError("not_tracked", "the job was submitted with tracking=false (or before "
                       "videos were tracked); submit it again with tracking=true",
                       status_code=409)
    if not job.is_finished:
        raise ApiError("not_ready", f"the job is {job.status}: objects are tracked once "
                       "every frame is processed", status_code=409)
    raise ApiError("not_tracked", "the objects of this job could not be tracked (see the "
                   "worker's log)", status_code=409)


class JobCancelView(APIView):
    @extend_schema(operation_id="cancel_job", request=None,
                   responses={200: JobDetailSerializer, 409: OpenApiResponse(
                       description="already finished"), **ERROR_RESPONSES},
                   summary="Cancel a queued or running job")
    def post(self, request, job_id):
        job = selectors.job_get(user=request.user, job_id=job_id)
        if job.is_finished:
            raise ApiError("already_finished", f"the job already {job.status}", status_code=409)
        return job_detail_response(request, services.job_cancel(job=job))
