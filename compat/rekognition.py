"""An AWS Rekognition-compatible label-detection and person-tracking API (AWS JSON 1.1
protocol, ``compat.aws``).

``POST /`` (or REKOGNITION_PATH) with ``X-Amz-Target: RekognitionService.<Operation>``,
signed with AWS Signature Version 4, so that the AWS SDKs work with ``endpoint_url``
pointed at PMR. A thin layer: each call becomes the same jobs and records as the native
API, and answers are translated into Rekognition's shapes.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from collections.abc import Callable

from django.conf import settings
from django.core import signing
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db.models import Max
from drf_spectacular.utils import extend_schema

from compat.aws import AwsError, AwsJsonView, SigV4Authentication, translate
from compat.inputs import image_bytes, object_source, parameter_error, spooled_to_disk
from core.errors import ApiError
from engine.labels import rekognition_name
from images.services import image_job_detect
from jobs import catalog
from jobs import selectors as job_selectors
from jobs.models import Detection, Job
from jobs.selectors import default_gap_ms, label_segments
from videos import services as video_services

logger = logging.getLogger(__name__)

TARGET_PREFIX = "RekognitionService."


# --- parameters ---------------------------------------------------------------------------

def _min_confidence(body: dict, default: float) -> float:
    value = body.get("MinConfidence", default)
    if not isinstance(value, int | float) or not 0 <= value <= 100:
        raise parameter_error("MinConfidence must be a number from 0 to 100")
    return min(float(value), 99.9) / 100


def _label_filters(body: dict) -> tuple[set[str], set[str]]:
    general = ((body.get("Settings") or {}).get("GeneralLabels") or {})
    for unsupported in ("LabelCategoryInclusionFilters", "LabelCategoryExclusionFilters"):
        if general.get(unsupported):
            raise parameter_error(f"{unsupported} is not supported (PMR has no label categories)")
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
    name, data = image_bytes(body)
    include, exclude = _label_filters(body)
    max_labels = body.get("MaxLabels", 1000)
    if not isinstance(max_labels, int) or max_labels < 0:
        raise parameter_error("MaxLabels must be a positive integer")
    features = body.get("Features") or ["GENERAL_LABELS"]
    if set(features) - {"GENERAL_LABELS"}:
        raise parameter_error("only the GENERAL_LABELS feature is supported")
    params = {"min_confidence": _min_confidence(body, 55), "iou_threshold": 0.45,
              "classes": None, "max_detections": 1000}
    job, finished = image_job_detect(owner=user, upload=SimpleUploadedFile(name, data),
                                     params=params, timeout=settings.DETECT_WAIT_SECONDS)
    if not finished or job.status != Job.Status.SUCCEEDED:
        raise AwsError("InternalServerError", "the detector did not answer in time; "
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


def _start_video(body: dict, user, params: dict) -> dict:
    """Submit the S3 object a Start* call names as a video job with ``params``."""
    video = body.get("Video")
    if not isinstance(video, dict) or not isinstance(video.get("S3Object"), dict):
        raise parameter_error("Video.S3Object is required")
    token = body.get("ClientRequestToken") or ""
    if not isinstance(token, str) or len(token) > 64:
        raise parameter_error("ClientRequestToken must be a string of at most 64 characters")
    if token:
        earlier = Job.objects.filter(owner=user, idempotency_key=f"rekognition:{token}").first()
        if earlier is not None:
            return {"JobId": str(earlier.pk)}
    name, open_stream = object_source(video["S3Object"])
    params = {**params, "rekognition": {"job_tag": body.get("JobTag"),
                                        "notification_channel": body.get("NotificationChannel")}}
    try:
        upload = spooled_to_disk(os.path.basename(name), open_stream,
                                  settings.MAX_VIDEO_UPLOAD_BYTES)
        with upload:
            job, _ = video_services.video_job_submit(
                owner=user, upload=upload, params=params,
                idempotency_key=f"rekognition:{token}" if token else "")
    except ApiError as exc:
        raise translate(exc, video=True) from None
    return {"JobId": str(job.pk)}


def start_label_detection(body: dict, user) -> dict:
    return _start_video(body, user, {
        "min_confidence": _min_confidence(body, 50), "iou_threshold": 0.45, "classes": None,
        "max_detections": 100, "annotate": False, "tracking": True})


def start_person_tracking(body: dict, user) -> dict:
    """Persons only, tracked (AWS's call has no threshold: the native API's default)."""
    return _start_video(body, user, {
        "min_confidence": 0.25, "iou_threshold": 0.45, "classes": ["person"],
        "max_detections": 100, "annotate": False, "tracking": True,
        "track_activation_threshold": settings.TRACK_ACTIVATION_THRESHOLD})


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
        raise AwsError("InvalidPaginationTokenException", "Invalid Token") from None
    if not isinstance(state, dict) or not isinstance(state.get("offset"), int) or state != {
            **state, "job": str(job.pk), "sort": sort, "aggregate": aggregate}:
        raise AwsError("InvalidPaginationTokenException", "Invalid Token")
    return state["offset"]


def _video_job(body: dict, user) -> Job:
    job_id = body.get("JobId")
    job = Job.objects.select_related("video").filter(
        pk=job_id, owner=user, kind=Job.Kind.VIDEO).first() \
        if isinstance(job_id, str) and _is_uuid(job_id) else None
    if job is None:
        raise AwsError("ResourceNotFoundException", "The resource specified in the "
                               "request cannot be found.")
    return job


def _max_results(body: dict) -> int:
    max_results = body.get("MaxResults", 1000)
    if not isinstance(max_results, int) or not 1 <= max_results <= 1000:
        raise parameter_error("MaxResults must be from 1 to 1000")
    return max_results


def _video_answer(job: Job) -> dict:
    """What every Get* answer starts with: the job's state and the video's metadata."""
    result = {"JobStatus": _STATUS[job.status], "JobId": str(job.pk),
              "VideoMetadata": {"Codec": job.video.codec.lower() or "unknown",
                                "DurationMillis": job.video.duration_ms or 0,
                                "Format": _FORMATS.get(job.content_type, job.content_type),
                                "FrameRate": job.video.fps or 0,
                                "FrameHeight": job.height or 0,
                                "FrameWidth": job.width or 0}}
    tag = (job.params.get("rekognition") or {}).get("job_tag")
    if tag:
        result["JobTag"] = tag
    if job.error_message:
        result["StatusMessage"] = job.error_message
    return result


def get_label_detection(body: dict, user) -> dict:
    job = _video_job(body, user)
    sort = body.get("SortBy", "TIMESTAMP")
    aggregate = body.get("AggregateBy", "TIMESTAMPS")
    if sort not in ("TIMESTAMP", "NAME") or aggregate not in ("TIMESTAMPS", "SEGMENTS"):
        raise parameter_error("SortBy is TIMESTAMP or NAME; AggregateBy is TIMESTAMPS or SEGMENTS")
    max_results = _max_results(body)
    token = body.get("NextToken")
    offset = _page_offset(token, job, sort, aggregate) if token else 0
    result = {**_video_answer(job), "LabelModelVersion": _model_version(job), "Labels": []}
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


def get_person_tracking(body: dict, user) -> dict:
    """Each tracked person's box at each processed frame: ``Person.Index`` is its track id
    (GET /api/jobs/{id}/tracks/{Index}), the same through the video. Persons no track took
    (nested duplicates, flicker) are left out, as AWS leaves out what it does not track."""
    job = _video_job(body, user)
    sort = body.get("SortBy", "TIMESTAMP")
    if sort not in ("TIMESTAMP", "INDEX"):
        raise parameter_error("SortBy is TIMESTAMP or INDEX")
    max_results = _max_results(body)
    token = body.get("NextToken")
    offset = _page_offset(token, job, sort, "PERSONS") if token else 0
    result = {**_video_answer(job), "Persons": []}
    if result["JobStatus"] != "SUCCEEDED":
        return result
    if job.video.tracks is None:
        raise AwsError("InvalidParameterException", "the video job was not tracked: "
                       "start it with StartPersonTracking")
    order = (("timestamp_ms", "track_id", "id") if sort == "TIMESTAMP"
             else ("track_id", "timestamp_ms", "id"))
    rows = list(Detection.objects.filter(job=job, label="person", track_id__isnull=False)
                .order_by(*order)[offset:offset + max_results + 1])
    result["Persons"] = [{"Timestamp": row.timestamp_ms, "Person": {
        "Index": row.track_id, "BoundingBox": _instance(row, job.width, job.height)[
            "BoundingBox"]}} for row in rows[:max_results]]
    if len(rows) > max_results:
        result["NextToken"] = _page_token(job, offset + max_results, sort, "PERSONS")
    return result


def _is_uuid(value: str) -> bool:
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


# arn:aws:rekognition:REGION:ACCOUNT:project/NAME/version/VERSION/CREATED: the project is
# the model's name; the version its number ("3", "NAME.3" or "NAME@3"), or "default".
_VERSION_ARN = re.compile(r"^arn:aws:rekognition:[^:]*:[^:]*:project/(?P<name>[^/]+)"
                          r"/version/(?P<version>[^/]+)(?:/[^/]*)?$")


def model_of_arn(arn: object) -> catalog.Choice:
    """The registry's model version that a Custom Labels ProjectVersionArn names."""
    if not isinstance(arn, str):
        raise parameter_error("ProjectVersionArn is required")
    match = _VERSION_ARN.match(arn)
    if match is None:
        raise parameter_error(f"ProjectVersionArn {arn!r} is not a project version ARN "
                              "(arn:aws:rekognition:REGION:ACCOUNT:project/MODEL/version/"
                              "VERSION/CREATED)")
    name, version = match["name"], match["version"]
    for separator in (f"{name}.", f"{name}@"):
        version = version.removeprefix(separator)
    ref = name if version in ("default", "latest") else f"{name}@{version}"
    if not version.isdigit() and ref != name:
        raise parameter_error(f"the version in {arn!r} is not a version number of {name}")
    try:
        return catalog.resolve(ref)
    except ApiError as exc:
        raise AwsError("ResourceNotFoundException", exc.message) from None


def detect_custom_labels(body: dict, user) -> dict:
    """Custom Labels' object detection: each box of the named model as a CustomLabel with
    its Geometry (labels are the model's own class names)."""
    model = model_of_arn(body.get("ProjectVersionArn"))
    name, data = image_bytes(body)
    max_results = body.get("MaxResults", 1000)
    if not isinstance(max_results, int) or max_results < 0:
        raise parameter_error("MaxResults must be a positive integer")
    params = {"min_confidence": _min_confidence(body, 25), "iou_threshold": 0.45,
              "classes": None, "max_detections": 1000}
    job, finished = image_job_detect(owner=user, upload=SimpleUploadedFile(name, data),
                                     params=params, timeout=settings.DETECT_WAIT_SECONDS,
                                     model=model)
    if not finished or job.status != Job.Status.SUCCEEDED:
        raise AwsError("InternalServerError", "the detector did not answer in time; "
                               f"the job is {job.pk}", 500)
    labels = []
    for row in job_selectors.job_detections(job=job)[:max_results]:
        box = _instance(row, job.width, job.height)["BoundingBox"]
        corners = [(box["Left"], box["Top"]), (box["Left"] + box["Width"], box["Top"]),
                   (box["Left"] + box["Width"], box["Top"] + box["Height"]),
                   (box["Left"], box["Top"] + box["Height"])]
        labels.append({"Name": row.label, "Confidence": row.confidence * 100,
                       "Geometry": {"BoundingBox": box,
                                    "Polygon": [{"X": x, "Y": y} for x, y in corners]}})
    return {"CustomLabels": labels}


OPERATIONS: dict[str, Callable[[dict, object], dict]] = {
    "DetectLabels": detect_labels,
    "DetectCustomLabels": detect_custom_labels,
    "StartLabelDetection": start_label_detection,
    "GetLabelDetection": get_label_detection,
    "StartPersonTracking": start_person_tracking,
    "GetPersonTracking": get_person_tracking,
}


class RekognitionAuthentication(SigV4Authentication):
    service = "rekognition"


@extend_schema(exclude=True)  # Rekognition's API, documented by AWS
class RekognitionView(AwsJsonView):
    target_prefix = TARGET_PREFIX
    operations = OPERATIONS
    submitting = frozenset({"DetectLabels", "DetectCustomLabels", "StartLabelDetection",
                            "StartPersonTracking"})
    authentication_classes = [RekognitionAuthentication]
