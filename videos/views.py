"""The video API: submit a video, its tracked objects, get it back annotated."""

from __future__ import annotations

from django.core.files.storage import default_storage
from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.pagination import CursorPagination
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from core.errors import ApiError
from core.schema import ERROR_RESPONSES
from jobs import selectors as job_selectors
from jobs.filters import TrackFilter
from jobs.models import Detection, Job, Track
from jobs.serializers import JobSerializer
from jobs.views import request_owner, require_tracks
from videos import services
from videos.serializers import DetectVideoSerializer, TrackDetailSerializer, TrackSerializer


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
        model = params.pop("model")
        callback_url = params.pop("callback_url", "") or ""
        key = request.headers.get("Idempotency-Key", "").strip()
        if len(key) > 255:
            raise ApiError("invalid_parameters", "Idempotency-Key is too long",
                           details={"Idempotency-Key": "at most 255 characters"})
        job, _ = services.video_job_submit(owner=request_owner(request), upload=upload,
                                           params=params, callback_url=callback_url,
                                           idempotency_key=key, model=model,
                                           base_url=request.build_absolute_uri("/"))
        data = JobSerializer(job, context={"request": request}).data
        return Response(data, status=status.HTTP_202_ACCEPTED,
                        headers={"Location": data["status_url"]})


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
        if job.video.annotated_file:
            response = FileResponse(default_storage.open(job.video.annotated_file.name, "rb"),
                                    content_type="video/mp4")
            response["Content-Disposition"] = f'inline; filename="{job.pk}-annotated.mp4"'
            return response
        if job.status != Job.Status.SUCCEEDED:
            raise ApiError("not_ready", f"the job is {job.status}", status_code=409)
        services.annotation_request(job=job)
        return Response({"status": "rendering", "retry_after_s": 5},
                        status=status.HTTP_202_ACCEPTED, headers={"Retry-After": "5"})


class TrackCursor(CursorPagination):
    ordering = ("track_id",)
    page_size = 200
    page_size_query_param = "page_size"
    max_page_size = 2000


class JobTracksView(generics.ListAPIView):
    serializer_class = TrackSerializer
    pagination_class = TrackCursor
    filterset_class = TrackFilter
    queryset = Track.objects.none()  # the schema's model; get_queryset has the job's

    @extend_schema(operation_id="list_job_tracks", responses={
        200: TrackSerializer(many=True), 409: OpenApiResponse(
            description="not tracked (tracking=false), or not yet (the job is running)"),
        **ERROR_RESPONSES},
        summary="A video job's tracked objects, by track id (cursor-paginated)")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        job = job_selectors.job_get(user=self.request.user, job_id=self.kwargs["job_id"])
        require_tracks(job)
        return job_selectors.job_tracks(job=job)


class JobTrackDetailView(APIView):
    @extend_schema(operation_id="get_job_track", responses={
        200: TrackDetailSerializer, 409: OpenApiResponse(description="not tracked"),
        **ERROR_RESPONSES}, summary="One tracked object, with its box in every frame")
    def get(self, request, job_id, track_id):
        job = job_selectors.job_get(user=request.user, job_id=job_id)
        require_tracks(job)
        track = job_selectors.job_tracks(job=job).filter(track_id=track_id).first()
        if track is None:
            raise ApiError("not_found", f"the job has no track {track_id}", status_code=404)
        boxes = Detection.objects.filter(job=job, track_id=track_id).order_by(
            "frame_index", "-confidence", "id")
        return Response(TrackDetailSerializer(track, context={"boxes": boxes}).data)
