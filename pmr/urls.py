import re

from django.conf import settings
from django.contrib import admin
from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from compat import deepstack, rekognition
from core.errors import json_error_view
from images import views as image_views
from jobs import model_views
from jobs import views as job_views
from pmr import health
from pmr.index import api_index
from pmr.metrics import metrics_view
from videos import views as video_views

# An AWS SDK posts to its endpoint URL's path as it is, "/aws" or "/aws/": both are served.
_REKOGNITION = (rf"^{re.escape(settings.REKOGNITION_PATH)}/?$" if settings.REKOGNITION_PATH
                else r"^$")

urlpatterns = [
    re_path(_REKOGNITION, rekognition.RekognitionView.as_view(), name="rekognition"),
    path("v1/vision/detection", deepstack.DetectionView.as_view(), name="deepstack-detection"),
    path("v1/vision/custom/<str:model>", deepstack.DetectionView.as_view(),
         name="deepstack-custom"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("api/", api_index, name="api-index"),
    path("api/detect/image", image_views.DetectImageView.as_view(), name="detect-image"),
    path("api/jobs", job_views.JobListView.as_view(), name="job-list"),
    path("api/models", model_views.ModelListView.as_view(), name="model-list"),
    path("api/models/<str:ref>", model_views.ModelDetailView.as_view(), name="model-detail"),
    path("api/detect/video", video_views.DetectVideoView.as_view(), name="detect-video"),
    path("api/jobs/<uuid:job_id>", job_views.JobDetailView.as_view(), name="job-detail"),
    path("api/jobs/<uuid:job_id>/detections", job_views.JobDetectionsView.as_view(),
         name="job-detections"),
    path("api/jobs/<uuid:job_id>/segments", job_views.JobSegmentsView.as_view(),
         name="job-segments"),
    path("api/jobs/<uuid:job_id>/tracks", video_views.JobTracksView.as_view(),
         name="job-tracks"),
    path("api/jobs/<uuid:job_id>/tracks/<int:track_id>", video_views.JobTrackDetailView.as_view(),
         name="job-track-detail"),
    path("api/jobs/<uuid:job_id>/annotated", video_views.JobAnnotatedView.as_view(),
         name="job-annotated"),
    path("api/jobs/<uuid:job_id>/cancel", job_views.JobCancelView.as_view(), name="job-cancel"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("admin/", admin.site.urls),
]

handler400 = json_error_view(400, "bad_request", "the request could not be understood")
handler403 = json_error_view(403, "permission_denied", "you may not do this")
handler404 = json_error_view(404, "not_found", "there is nothing at this address")
handler500 = json_error_view(500, "internal_error", "the server hit an unexpected error")
