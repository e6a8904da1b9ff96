"""The Rekognition-compatible API's errors the README lists, each produced for real: AWS's
JSON shape (`__type`, `message`), the `x-amzn-ErrorType` header, 400 (500 for
InternalServerError). Requests are signed by botocore, as AWS's own clients sign them.
(The errors a running stack gives boto3 are in tests/integration/test_compat.py.)"""

from __future__ import annotations

import base64
import json
import shutil

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from compat.models import AwsCredential
from tests.factories import JobFactory

pytestmark = pytest.mark.django_db(transaction=True)

TARGET = "RekognitionService."


@pytest.fixture
def aws(user):
    credential, secret = AwsCredential.issue(user)
    return credential.access_key_id, secret


def call(client, operation: str, body: bytes | dict, keys: tuple[str, str] | None,
         method: str = "POST", path: str = "/"):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = AWSRequest(method=method, url=f"http://testserver{path}", data=data,
                         headers={"Content-Type": "application/x-amz-json-1.1",
                                  "X-Amz-Target": TARGET + operation})
    if keys is not None:
        SigV4Auth(Credentials(*keys), "rekognition", "us-east-1").add_auth(request)
    headers = {f"HTTP_{name.upper().replace('-', '_')}": value
               for name, value in request.prepare().headers.items()
               if name.lower() not in ("content-type", "content-length")}
    headers.setdefault("HTTP_HOST", "testserver")  # signed: the test client sends none
    return client.generic(method, path, data, content_type="application/x-amz-json-1.1",
                          **headers)


def error_of(response, status: int = 400) -> dict:
    assert response.status_code == status, response.content
    body = json.loads(response.content)
    assert set(body) == {"__type", "message"} and body["message"]
    assert response["x-amzn-ErrorType"] == body["__type"]
    return body


def test_an_unsigned_request_is_missing_its_authentication_token(client):
    body = error_of(call(client, "DetectLabels", {"Image": {"Bytes": ""}}, keys=None))
    assert body["__type"] == "MissingAuthenticationTokenException"


def test_an_operation_pmr_does_not_have_is_unknown(client, aws):
    body = error_of(call(client, "IndexFaces", {"CollectionId": "c"}, aws))
    assert body["__type"] == "UnknownOperationException"
    assert "IndexFaces is not supported" in body["message"]
    not_post = error_of(call(client, "DetectLabels", {}, aws, method="PUT"))
    assert not_post["__type"] == "UnknownOperationException"


def test_a_body_that_is_not_json_is_a_serialization_error(client, aws):
    body = error_of(call(client, "DetectLabels", b"{not json", aws))
    assert body["__type"] == "SerializationException"


def test_a_half_made_signature_is_incomplete(client, aws):
    response = client.post("/", b"{}", content_type="application/x-amz-json-1.1",
                           HTTP_X_AMZ_TARGET=TARGET + "DetectLabels",
                           HTTP_AUTHORIZATION="AWS4-HMAC-SHA256 Credential=x")
    assert error_of(response)["__type"] == "IncompleteSignatureException"


def test_too_many_active_videos_is_limit_exceeded(client, aws, user, settings, tmp_path,
                                                  videos_dir):
    settings.MAX_ACTIVE_VIDEO_JOBS_PER_USER = 1
    settings.REKOGNITION_BUCKETS_DIR = str(tmp_path)
    (tmp_path / "videos").mkdir()
    shutil.copy(videos_dir / "intel_people-detection_from_gif.mp4", tmp_path / "videos" / "a.mp4")
    JobFactory(owner=user, kind="video", status="running")
    response = call(client, "StartLabelDetection",
                    {"Video": {"S3Object": {"Bucket": "videos", "Name": "a.mp4"}}}, aws)
    body = error_of(response)
    assert body["__type"] == "LimitExceededException"


def test_a_detector_that_does_not_answer_in_time_is_an_internal_server_error(
        client, aws, eager_celery, tiny_paths, darknet_dir, settings):
    # A real forward pass (tens of milliseconds) against a limit of a microsecond.
    settings.IMAGE_TASK_SOFT_TIME_LIMIT = 1e-6
    image = base64.b64encode((darknet_dir / "dog.jpg").read_bytes()).decode()
    body = error_of(call(client, "DetectLabels", {"Image": {"Bytes": image}}, aws), status=500)
    assert body["__type"] == "InternalServerError"


@pytest.fixture
def rekognition_at_aws(settings):
    import importlib

    from django.urls import clear_url_caches

    from pmr import urls

    settings.REKOGNITION_PATH = "aws"
    importlib.reload(urls)
    clear_url_caches()
    yield
    settings.REKOGNITION_PATH = ""
    importlib.reload(urls)
    clear_url_caches()


@pytest.mark.parametrize("path", ["/aws", "/aws/"])
def test_rekognition_path_moves_the_endpoint(client, aws, rekognition_at_aws, path):
    # boto3 posts to its endpoint_url's path as given: with or without the slash.
    body = error_of(call(client, "DetectLabels", b"{not json", aws, path=path))
    assert body["__type"] == "SerializationException"
    moved = call(client, "DetectLabels", b"{not json", aws, path="/")
    assert moved.status_code == 404 and moved.json()["error"]["code"] == "not_found"


def test_a_body_over_data_upload_max_memory_size_is_refused(client, aws, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    image = base64.b64encode(b"\xff\xd8" + b"x" * 2000).decode()
    body = error_of(call(client, "DetectLabels", {"Image": {"Bytes": image}}, aws))
    assert body["__type"] == "ImageTooLargeException" and "1000 bytes" in body["message"]


def test_uploads_share_one_rate_and_reads_are_not_uploads(client, aws, settings, tmp_path):
    settings.THROTTLE_DETECT_RATE = "2/day"
    settings.REKOGNITION_BUCKETS_DIR = str(tmp_path)
    missing = {"Video": {"S3Object": {"Bucket": "videos", "Name": "none.mp4"}}}
    codes = [error_of(call(client, operation, body, aws))["__type"] for operation, body in [
        ("DetectLabels", {"Image": {"Bytes": base64.b64encode(b"not an image").decode()}}),
        ("StartLabelDetection", missing),  # the second upload of the day, refused or not
        ("StartLabelDetection", missing),
        ("GetLabelDetection", {"JobId": "00000000-0000-0000-0000-000000000000"})]]
    assert codes == ["InvalidImageFormatException", "InvalidS3ObjectException",
                     "ProvisionedThroughputExceededException", "ResourceNotFoundException"]


@pytest.mark.parametrize("max_results", [0, 1001])
def test_get_label_detection_pages_hold_1_to_1000(client, aws, user, max_results):
    job = JobFactory(owner=user, kind="video", status="succeeded")
    body = error_of(call(client, "GetLabelDetection",
                         {"JobId": str(job.pk), "MaxResults": max_results}, aws))
    assert body["__type"] == "InvalidParameterException" and "MaxResults" in body["message"]
