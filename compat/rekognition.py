"""An AWS Rekognition-compatible label-detection API (AWS JSON 1.1 protocol).

``POST /`` (or REKOGNITION_PATH) with ``X-Amz-Target: RekognitionService.<Operation>``,
signed with AWS Signature Version 4, so that the AWS SDKs work with ``endpoint_url``
pointed at PMR. A thin layer: each call becomes the same jobs and records as the native
API, and answers are translated into Rekognition's shapes.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from django.core import signing
from django.core.exceptions import RequestDataTooBig
from django.core.files.uploadedfile import SimpleUploadedFile, TemporaryUploadedFile
from django.db.models import Max
from django.http import HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from compat import sigv4
from detection import selectors as job_selectors
from detection.engine.labels import rekognition_name
from detection.models import Detection, Job
from detection.services import image_job_detect
from pmr.errors import DATABASE_ERRORS, ApiError
from pmr.throttling import ScopedThrottle, UserThrottle
from videos import services as video_services
from videos.selectors import default_gap_ms, label_segments

logger = logging.getLogger(__name__)

TARGET_PREFIX = "RekognitionService."
CONTENT_TYPE = "application/x-amz-json-1.1"
MAX_IMAGE_BYTES = 5 * 1024 * 1024  # Rekognition's limit for Image.Bytes


class RekognitionError(Exception):
    def __init__(self, error_type: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.status = status


def _error_response(error: RekognitionError) -> HttpResponse:
    response = HttpResponse(json.dumps({"__type": error.error_type, "message": error.message}),
                            status=error.status, content_type=CONTENT_TYPE)
    response["x-amzn-ErrorType"] = error.error_type
    return response


# PMR's error codes, in Rekognition's terms.
_FROM_API_ERRORS = {
    "empty_file": "InvalidImageFormatException", "not_an_image": "InvalidImageFormatException",
    "corrupt_image": "InvalidImageFormatException",
    "unsupported_media_type": "InvalidImageFormatException",
    "too_large": "ImageTooLargeException", "invalid_parameters": "InvalidParameterException",
    "not_a_video": "InvalidParameterException", "corrupt_video": "InvalidParameterException",
    "invalid_video": "InvalidParameterException",
    "throttled": "ProvisionedThroughputExceededException",
    "too_many_active_jobs": "LimitExceededException",
}


def _translate(exc: ApiError, *, video: bool = False) -> RekognitionError:
    kind = _FROM_API_ERRORS.get(exc.code)
    if video and kind in ("InvalidImageFormatException", "ImageTooLargeException"):
        kind = "InvalidParameterException"
    if kind is None:
        return RekognitionError("InternalServerError", exc.message, 500)
    return RekognitionError(kind, exc.message)


class _Scoped:
    throttle_scope = "detect"


# Operations that submit work count against the upload ("detect") rate as well as the
# per-user one; reads (GetLabelDetection, polled while a video runs) only against the
# per-user rate, like the native API's GET /api/jobs/{id}.
_SUBMITTING = frozenset({"DetectLabels", "StartLabelDetection"})


def _throttle(request, user, operation: str) -> None:
    request.user = user
    throttles = [(UserThrottle(), None)]
    if operation in _SUBMITTING:
        throttles.append((ScopedThrottle(), _Scoped()))
    for throttle, view in throttles:
        if not throttle.allow_request(request, view):
            raise RekognitionError("ProvisionedThroughputExceededException",
                                   "The request rate exceeds your limits for this operation.")


@csrf_exempt
def endpoint(request) -> HttpResponse:
    if request.method == "GET" and "X-Amz-Target" not in request.headers:
        return JsonResponse({"service": "PMR", "api": request.build_absolute_uri("/api/"),
                             "docs": request.build_absolute_uri("/api/docs/"),
                             "rekognition": "POST with X-Amz-Target: RekognitionService.<Op>"})
    target = request.headers.get("X-Amz-Target", "")
    try:
        if request.method != "POST":
            raise RekognitionError("UnknownOperationException", "use POST")
        if not target.startswith(TARGET_PREFIX):
            raise RekognitionError("UnknownOperationException",
                                   f"expected X-Amz-Target: {TARGET_PREFIX}<Operation>")
        name = target[len(TARGET_PREFIX):]
        operation = OPERATIONS.get(name)
        if operation is None:
            raise RekognitionError("UnknownOperationException",
                                   f"{target} is not supported by PMR (see its README)")
        try:
            raw = request.body  # read before the signature, which covers it
        except RequestDataTooBig:
            raise RekognitionError("ImageTooLargeException", "the request is larger than "
                                   f"{settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes") from None
        try:
            credential = sigv4.verify(request, service="rekognition")
        except sigv4.SignatureError as exc:
            raise RekognitionError(exc.error_type, exc.message) from None
        _throttle(request, credential.user, name)
        try:
            body = json.loads(raw or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise RekognitionError("SerializationException", "the body is not JSON") from None
        if not isinstance(body, dict):
            raise RekognitionError("SerializationException", "the body is not a JSON object")
        result = operation(body, credential.user)
    except RekognitionError as exc:
        return _error_response(exc)
    except ApiError as exc:
        return _error_response(_translate(exc))
    except DATABASE_ERRORS:
        return _error_response(RekognitionError("InternalServerError",
                                                "the service is unavailable; retry", 500))
    return JsonResponse(result, content_type=CONTENT_TYPE)


# --- parameters ---------------------------------------------------------------------------

def _parameter(message: str) -> RekognitionError:
    return RekognitionError("InvalidParameterException", message)


def _min_confidence(body: dict, default: float) -> float:
    value = body.get("MinConfidence", default)
    if not isinstance(value, int | float) or not 0 <= value <= 100:
        raise _parameter("MinConfidence must be a number from 0 to 100")
    return min(float(value), 99.9) / 100


def _object_source(s3_object: dict) -> tuple[str, Callable[[], BinaryIO]]:
    """(a name, an opener of a binary stream) for an S3Object: the S3-compatible store PMR
    is configured with, or a local folder standing in for buckets
    (REKOGNITION_BUCKETS_DIR/<bucket>/<key>). Nothing is read until the stream is."""
    bucket, key = s3_object.get("Bucket"), s3_object.get("Name")
    if not isinstance(bucket, str) or not isinstance(key, str) or not bucket or not key:
        raise _parameter("S3Object needs Bucket and Name")
    if settings.STORAGE_BACKEND == "s3":
        from django.core.files.storage import storages

        client = storages["default"].connection.meta.client

        def open_object() -> BinaryIO:
            try:
                return client.get_object(Bucket=bucket, Key=key)["Body"]
            except Exception as exc:
                raise RekognitionError("InvalidS3ObjectException",
                                       f"Unable to get object metadata from S3: {exc}") from None

        return key, open_object
    root = Path(settings.REKOGNITION_BUCKETS_DIR) if settings.REKOGNITION_BUCKETS_DIR else None
    if root is None:
        raise RekognitionError("InvalidS3ObjectException",
                               "no object store is configured (STORAGE_BACKEND=s3 or "
                               "REKOGNITION_BUCKETS_DIR)")
    base = (root / bucket).resolve()
    path = (base / key).resolve()
    if not base.is_relative_to(root.resolve()) or not path.is_relative_to(base) \
            or not path.is_file():
        raise RekognitionError("InvalidS3ObjectException",
                               "Unable to get object metadata from S3. Check object key, region "
                               "and/or access permissions.")
    return key, lambda: path.open("rb")


def _read_at_most(open_stream: Callable[[], BinaryIO], limit: int) -> bytes:
    """The object's bytes, up to one past ``limit`` (enough to tell that it is too large)."""
    stream = open_stream()
    try:
        return stream.read(limit + 1)
    finally:
        stream.close()


def _spooled_to_disk(name: str, open_stream: Callable[[], BinaryIO],
                     limit: int) -> TemporaryUploadedFile:
    """The object copied to a temporary file in chunks (never whole in memory); a 413
    past ``limit`` bytes, read no further."""
    upload = TemporaryUploadedFile(name, "application/octet-stream", 0, None)
    stream = open_stream()
    try:
        while chunk := stream.read(1 << 20):
            upload.size += len(chunk)
            if upload.size > limit:
                raise ApiError("too_large", f"the object is over {limit} bytes, the limit",
                               status_code=413, details={"max_bytes": limit})
            upload.write(chunk)
    except Exception:
        upload.close()
        raise
    finally:
        stream.close()
    upload.flush()
    upload.seek(0)
    return upload


def _image_bytes(body: dict) -> tuple[str, bytes]:
    image = body.get("Image")
    if not isinstance(image, dict) or ("Bytes" in image) == ("S3Object" in image):
        raise _parameter("Image needs exactly one of Bytes and S3Object")
    if "Bytes" in image:
        try:
            data = base64.b64decode(image["Bytes"], validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise _parameter("Image.Bytes is not base64") from None
        name = "image"
    else:
        name, open_stream = _object_source(image["S3Object"])
        data = _read_at_most(open_stream, MAX_IMAGE_BYTES)
    if len(data) > MAX_IMAGE_BYTES:
        raise RekognitionError("ImageTooLargeException",
                               f"Image size is too large: {len(data)} bytes, at most "
                               f"{MAX_IMAGE_BYTES}")
    if not data:
        raise RekognitionError("InvalidImageFormatException", "Request has invalid image format")
    return name, data


def _label_filters(body: dict) -> tuple[set[str], set[str]]:
    general = ((body.get("Settings") or {}).get("GeneralLabels") or {})
    for unsupported in ("LabelCategoryInclusionFilters", "LabelCategoryExclusionFilters"):
        if general.get(unsupported):
            raise _parameter(f"{unsupported} is not supported (PMR has no label categories)")
    include = {str(n).lower() for n in general.get("LabelInclusionFilters") or []}
    exclude = {str(n).lower() for n in general.get("LabelExclusionFilters") or []}
    return include, exclude


def _instance(row, width: int, height: int) -> dict:
    return {"BoundingBox": {"Width": (row.x2 - row.x1) / width,
                            "Height": (row.y2 - row.y1) / height,
                            "Left": row.x1 / width, "Top": row.y1 / height},
            "Confidence": row.confidence * 100}


def _label(name: str, confidence: float, instances: list[dict]) -> dict:
    return {"Name": name, "Confidence": confidence, "Instances": instances, "Parents": [],
            "Aliases": [], "Categories": []}


def _model_version(job: Job) -> str:
    return f"pmr-{job.model_name}"


# --- operations -----------------------------------------------------------------------------

def detect_labels(body: dict, user) -> dict:
    name, data = _image_bytes(body)
    include, exclude = _label_filters(body)
    max_labels = body.get("MaxLabels", 1000)
    if not isinstance(max_labels, int) or max_labels < 0:
        raise _parameter("MaxLabels must be a positive integer")
    features = body.get("Features") or ["GENERAL_LABELS"]
    if set(features) - {"GENERAL_LABELS"}:
        raise _parameter("only the GENERAL_LABELS feature is supported")
    params = {"min_confidence": _min_confidence(body, 55), "iou_threshold": 0.45,
              "classes": None, "max_detections": 1000}
    job, finished = image_job_detect(owner=user, upload=SimpleUploadedFile(name, data),
                                     params=params, timeout=settings.DETECT_WAIT_SECONDS)
    if not finished or job.status != Job.Status.SUCCEEDED:
        raise RekognitionError("InternalServerError", "the detector did not answer in time; "
                               f"the job is {job.pk}", 500)
    labels: dict[str, dict] = {}
    for row in job_selectors.job_detections(job=job):
        label_name = rekognition_name(row.label)
        if (include and label_name.lower() not in include) or label_name.lower() in exclude:
            continue
        entry = labels.setdefault(label_name, _label(label_name, 0.0, []))
        entry["Instances"].append(_instance(row, job.width, job.height))
        entry["Confidence"] = max(entry["Confidence"], row.confidence * 100)
    ranked = sorted(labels.values(), key=lambda label: -label["Confidence"])[:max_labels]
    return {"Labels": ranked, "LabelModelVersion": _model_version(job)}


def start_label_detection(body: dict, user) -> dict:
    video = body.get("Video")
    if not isinstance(video, dict) or not isinstance(video.get("S3Object"), dict):
        raise _parameter("Video.S3Object is required")
    token = body.get("ClientRequestToken") or ""
    if not isinstance(token, str) or len(token) > 64:
        raise _parameter("ClientRequestToken must be a string of at most 64 characters")
    if token:
        earlier = Job.objects.filter(owner=user, idempotency_key=f"rekognition:{token}").first()
        if earlier is not None:
            return {"JobId": str(earlier.pk)}
    name, open_stream = _object_source(video["S3Object"])
    params = {"min_confidence": _min_confidence(body, 50), "iou_threshold": 0.45,
              "classes": None, "max_detections": 100, "annotate": False,
              "rekognition": {"job_tag": body.get("JobTag"),
                              "notification_channel": body.get("NotificationChannel")}}
    try:
        upload = _spooled_to_disk(os.path.basename(name), open_stream,
                                  settings.MAX_VIDEO_UPLOAD_BYTES)
        with upload:
            job, _ = video_services.video_job_submit(
                owner=user, upload=upload, params=params,
                idempotency_key=f"rekognition:{token}" if token else "")
    except ApiError as exc:
        raise _translate(exc, video=True) from None
    return {"JobId": str(job.pk)}


_STATUS = {Job.Status.QUEUED: "IN_PROGRESS", Job.Status.RUNNING: "IN_PROGRESS",
           Job.Status.SUCCEEDED: "SUCCEEDED", Job.Status.FAILED: "FAILED",
           Job.Status.CANCELLED: "FAILED"}
_FORMATS = {"video/mp4": "QuickTime / MOV", "video/quicktime": "QuickTime / MOV",
            "video/x-m4v": "QuickTime / MOV", "video/x-matroska": "Matroska / WebM",
            "video/webm": "Matroska / WebM", "video/x-msvideo": "AVI"}


_PAGES = signing.Signer(salt="pmr.rekognition.pages")


def _page_token(job: Job, offset: int, sort: str, aggregate: str) -> str:
    return _PAGES.sign_object({"job": str(job.pk), "offset": offset, "sort": sort,
                               "aggregate": aggregate})


def _page_offset(token: str, job: Job, sort: str, aggregate: str) -> int:
    """The offset a NextToken carries, if PMR signed it for this very job and order."""
    try:
        state = _PAGES.unsign_object(token)
    except (signing.BadSignature, ValueError):
        raise RekognitionError("InvalidPaginationTokenException", "Invalid Token") from None
    if not isinstance(state, dict) or not isinstance(state.get("offset"), int) or state != {
            **state, "job": str(job.pk), "sort": sort, "aggregate": aggregate}:
        raise RekognitionError("InvalidPaginationTokenException", "Invalid Token")
    return state["offset"]


def get_label_detection(body: dict, user) -> dict:
    job_id = body.get("JobId")
    job = Job.objects.filter(pk=job_id, owner=user, kind=Job.Kind.VIDEO).first() \
        if isinstance(job_id, str) and _is_uuid(job_id) else None
    if job is None:
        raise RekognitionError("ResourceNotFoundException", "The resource specified in the "
                               "request cannot be found.")
    sort = body.get("SortBy", "TIMESTAMP")
    aggregate = body.get("AggregateBy", "TIMESTAMPS")
    max_results = body.get("MaxResults", 1000)
    if sort not in ("TIMESTAMP", "NAME") or aggregate not in ("TIMESTAMPS", "SEGMENTS"):
        raise _parameter("SortBy is TIMESTAMP or NAME; AggregateBy is TIMESTAMPS or SEGMENTS")
    if not isinstance(max_results, int) or not 1 <= max_results <= 1000:
        raise _parameter("MaxResults must be from 1 to 1000")
    token = body.get("NextToken")
    offset = _page_offset(token, job, sort, aggregate) if token else 0
    result = {"JobStatus": _STATUS[job.status], "JobId": str(job.pk),
              "LabelModelVersion": _model_version(job),
              "VideoMetadata": {"Codec": job.codec.lower() or "unknown",
                                "DurationMillis": job.duration_ms or 0,
                                "Format": _FORMATS.get(job.content_type, job.content_type),
                                "FrameRate": job.fps or 0, "FrameHeight": job.height or 0,
                                "FrameWidth": job.width or 0},
              "Labels": []}
    tag = (job.params.get("rekognition") or {}).get("job_tag")
    if tag:
        result["JobTag"] = tag
    if job.error_message:
        result["StatusMessage"] = job.error_message
    if result["JobStatus"] != "SUCCEEDED":
        return result
    entries = (_segments(job, sort) if aggregate == "SEGMENTS"
               else _timestamps(job, sort, offset, max_results + 1))
    if aggregate == "SEGMENTS":
        entries = entries[offset:offset + max_results + 1]
    result["Labels"] = entries[:max_results]
    if len(entries) > max_results:
        result["NextToken"] = _page_token(job, offset + max_results, sort, aggregate)
    return result


def _is_uuid(value: str) -> bool:
    import uuid

    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _timestamps(job: Job, sort: str, offset: int, limit: int) -> list[dict]:
    """One entry per (timestamp, label), with that moment's instances of the label."""
    order = ("timestamp_ms", "label") if sort == "TIMESTAMP" else ("label", "timestamp_ms")
    groups = list(Detection.objects.filter(job=job).values("timestamp_ms", "label")
                  .annotate(best=Max("confidence")).order_by(*order)[offset:offset + limit])
    if not groups:
        return []
    wanted = {(g["timestamp_ms"], g["label"]) for g in groups}
    span = Detection.objects.filter(
        job=job, label__in={g["label"] for g in groups},
        timestamp_ms__gte=min(g["timestamp_ms"] for g in groups),
        timestamp_ms__lte=max(g["timestamp_ms"] for g in groups)).order_by("-confidence")
    instances: dict[tuple, list[dict]] = {}
    for row in span:
        if (row.timestamp_ms, row.label) in wanted:
            instances.setdefault((row.timestamp_ms, row.label), []).append(
                _instance(row, job.width, job.height))
    return [{"Timestamp": g["timestamp_ms"],
             "Label": _label(rekognition_name(g["label"]), g["best"] * 100,
                             instances[(g["timestamp_ms"], g["label"])])} for g in groups]


def _segments(job: Job, sort: str) -> list[dict]:
    segments = label_segments(detections=Detection.objects.filter(job=job),
                              gap_ms=default_gap_ms(job))
    entries = [{"Timestamp": s["start_ms"], "StartTimestampMillis": s["start_ms"],
                "EndTimestampMillis": s["end_ms"], "DurationMillis": s["duration_ms"],
                "Label": {"Name": rekognition_name(s["label"]),
                          "Confidence": s["max_confidence"] * 100,
                          "Parents": [], "Aliases": [], "Categories": []}} for s in segments]
    key = (lambda e: (e["Timestamp"], e["Label"]["Name"])) if sort == "TIMESTAMP" \
        else (lambda e: (e["Label"]["Name"], e["Timestamp"]))
    return sorted(entries, key=key)


OPERATIONS: dict[str, Callable[[dict, object], dict]] = {
    "DetectLabels": detect_labels,
    "StartLabelDetection": start_label_detection,
    "GetLabelDetection": get_label_detection,
}
