"""A DeepStack-compatible object-detection endpoint: POST /v1/vision/detection.

Blue Iris, Home Assistant and the scripts written for DeepStack (or CodeProject.AI, which
copied its API) work unchanged: multipart ``image``, optional ``min_confidence`` (0-1,
default 0.4) and ``api_key`` (a PMR API token). The answer has DeepStack's shape, its
label names and integer pixel coordinates; errors are ``{"success": false, "error"}``.
Every call is a stored PMR job, like any other.
"""

from __future__ import annotations

from django.conf import settings
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework.authtoken.models import Token

from detection import selectors
from detection.engine.labels import coco_name
from detection.models import Job
from detection.services import image_job_detect
from pmr.errors import DATABASE_ERRORS, ApiError
from pmr.throttling import ScopedThrottle, UserThrottle

DEFAULT_MIN_CONFIDENCE = 0.4


def _failure(status: int, message: str) -> JsonResponse:
    return JsonResponse({"success": False, "error": message}, status=status)


class _Scoped:
    throttle_scope = "detect"


def _caller(request):
    """The token's user (form field api_key, or an Authorization header), or None."""
    key = request.POST.get("api_key", "").strip()
    header = request.headers.get("Authorization", "")
    if not key and header.startswith("Token "):
        key = header[len("Token "):].strip()
    if not key:
        return None
    token = Token.objects.select_related("user").filter(key=key).first()
    if token is None or not token.user.is_active:
        raise PermissionError
    return token.user


@csrf_exempt
def detection(request) -> JsonResponse:
    if request.method != "POST":
        return _failure(405, "use POST")
    try:
        user = _caller(request)
    except PermissionError:
        return _failure(401, "Incorrect api key")
    except DATABASE_ERRORS:
        return _failure(503, "the service is unavailable")
    if user is None and not settings.ALLOW_ANONYMOUS:
        return _failure(401, "an api_key is required")
    request.user = user or request.user
    for throttle, view in ((UserThrottle(), None), (ScopedThrottle(), _Scoped())):
        if not throttle.allow_request(request, view):
            response = _failure(429, "too many requests")
            response["Retry-After"] = str(max(1, round(throttle.wait())))
            return response
    upload = request.FILES.get("image")
    if upload is None:
        return _failure(400, "No valid image file was sent (multipart field 'image')")
    try:
        min_confidence = float(request.POST.get("min_confidence", DEFAULT_MIN_CONFIDENCE))
    except ValueError:
        return _failure(400, "min_confidence must be a number from 0 to 1")
    if not 0 <= min_confidence < 1:
        return _failure(400, "min_confidence must be a number from 0 to 1")
    params = {"min_confidence": min_confidence, "iou_threshold": 0.45, "classes": None,
              "max_detections": 1000}
    try:
        job, finished = image_job_detect(owner=user, upload=upload, params=params,
                                         timeout=settings.DETECT_WAIT_SECONDS)
    except ApiError as exc:
        return _failure(exc.status_code, exc.message)
    except DATABASE_ERRORS:
        return _failure(503, "the service is unavailable")
    if not finished or job.status != Job.Status.SUCCEEDED:
        return _failure(500, f"the detector did not answer in time (job {job.pk})")
    predictions = [{"label": coco_name(row.label), "confidence": row.confidence,
                    "x_min": round(row.x1), "y_min": round(row.y1), "x_max": round(row.x2),
                    "y_max": round(row.y2)} for row in selectors.job_detections(job=job)]
    return JsonResponse({"success": True, "predictions": predictions,
                         "duration": round(job.total_ms or 0)})
