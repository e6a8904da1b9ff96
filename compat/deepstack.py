"""DeepStack-compatible object detection: POST /v1/vision/detection (the service's
default model) and POST /v1/vision/custom/<model> (any model of the registry, by name or
NAME@VERSION, as DeepStack and CodeProject.AI serve custom models).

Blue Iris, Home Assistant and the scripts written for DeepStack (or CodeProject.AI, which
copied its API) work unchanged: multipart ``image``, optional ``min_confidence`` (0-1,
default 0.4) and ``api_key`` (a PMR API token). The answer has DeepStack's shape, its
label names (a custom model's own names) and integer pixel coordinates; errors are
``{"success": false, "error"}``.
Every call is a stored PMR job, like any other.

A DRF view with DeepStack's own authentication (the key in a form field or a Token
header), the service's throttles, and an exception handler that speaks DeepStack.
"""

from __future__ import annotations

import math

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.authtoken.models import Token
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import BasePermission
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from core.errors import DATABASE_ERRORS, ApiError
from core.throttling import ScopedThrottle, UserThrottle
from engine.labels import coco_name
from images.services import image_job_detect
from jobs import catalog, selectors
from jobs.models import Job

DEFAULT_MIN_CONFIDENCE = 0.4


class ApiKeyAuthentication(BaseAuthentication):
    """A PMR API token as DeepStack clients send it: form field ``api_key``, or an
    ``Authorization: Token <key>`` header. No key: anonymous (allowed or not by the
    permission); a wrong key: 401."""

    def authenticate(self, request):
        key = str(request.data.get("api_key", "")).strip()
        header = request.headers.get("Authorization", "")
        if not key and header.startswith("Token "):
            key = header[len("Token "):].strip()
        if not key:
            return None
        token = Token.objects.select_related("user").filter(key=key).first()
        if token is None or not token.user.is_active:
            raise exceptions.AuthenticationFailed("Incorrect api key")
        return token.user, token

    def authenticate_header(self, request) -> str:
        return "Token"


class KeyUnlessAnonymousAllowed(BasePermission):
    message = "an api_key is required"

    def has_permission(self, request, view) -> bool:
        return settings.ALLOW_ANONYMOUS or bool(request.user and request.user.is_authenticated)


def deepstack_exception_handler(exc, context) -> Response | None:
    """Every failure as DeepStack answers one: ``{"success": false, "error": "..."}``."""
    headers = {}
    if isinstance(exc, ApiError):
        status, message = exc.status_code, exc.message
    elif isinstance(exc, exceptions.Throttled):
        status, message = 429, "too many requests"
        headers["Retry-After"] = str(max(1, math.ceil(exc.wait or 1)))
    elif isinstance(exc, exceptions.NotAuthenticated):
        status, message = 401, KeyUnlessAnonymousAllowed.message
    elif isinstance(exc, exceptions.APIException):
        status, message = exc.status_code, str(exc.detail)
    elif isinstance(exc, DATABASE_ERRORS):
        status, message = 503, "the service is unavailable"
    else:
        return None  # a bug: the service's 500 handler
    return Response({"success": False, "error": message}, status=status, headers=headers)


class DetectionView(APIView):
    authentication_classes = [ApiKeyAuthentication]
    permission_classes = [KeyUnlessAnonymousAllowed]
    throttle_classes = [UserThrottle, ScopedThrottle]
    throttle_scope = "detect"
    parser_classes = [MultiPartParser, FormParser]
    renderer_classes = [JSONRenderer]

    def get_exception_handler(self):
        return deepstack_exception_handler

    def initial(self, request, *args, **kwargs):
        if request.method.lower() not in self.http_method_names or \
                not hasattr(self, request.method.lower()):
            raise exceptions.MethodNotAllowed(request.method, detail="use POST")
        super().initial(request, *args, **kwargs)

    @extend_schema(exclude=True)  # DeepStack's API, documented by DeepStack
    def post(self, request, model: str | None = None):
        upload = request.FILES.get("image")
        if upload is None:
            raise ApiError("missing_file", "No valid image file was sent (multipart field "
                           "'image')")
        try:
            min_confidence = float(request.data.get("min_confidence", DEFAULT_MIN_CONFIDENCE))
        except ValueError:
            min_confidence = math.nan
        if not 0 <= min_confidence < 1:
            raise ApiError("invalid_parameters", "min_confidence must be a number from 0 to 1")
        params = {"min_confidence": min_confidence, "iou_threshold": 0.45, "classes": None,
                  "max_detections": 1000}
        choice = catalog.resolve(model) if model else None  # a 400 listing the known ones
        job, finished = image_job_detect(owner=request.user if request.user.is_authenticated
                                         else None, upload=upload, params=params,
                                         timeout=settings.DETECT_WAIT_SECONDS, model=choice)
        if not finished or job.status != Job.Status.SUCCEEDED:
            raise ApiError("timeout", f"the detector did not answer in time (job {job.pk})",
                           status_code=500)
        name = coco_name if model is None else str  # DeepStack's COCO names; else the model's
        predictions = [{"label": name(row.label), "confidence": row.confidence,
                        "x_min": round(row.x1), "y_min": round(row.y1), "x_max": round(row.x2),
                        "y_max": round(row.y2)} for row in selectors.job_detections(job=job)]
        return Response({"success": True, "predictions": predictions,
                         "duration": round(job.total_ms or 0)})
