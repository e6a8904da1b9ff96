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
         method: str = "POST"):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = AWSRequest(method=method, url="http://testserver/", data=data,
                         headers={"Content-Type": "application/x-amz-json-1.1",
                                  "X-Amz-Target": TARGET + operation})
    if keys is not None:
        SigV4Auth(Credentials(*keys), "rekognition", "us-east-1").add_auth(request)
    headers = {f"HTTP_{name.upper().replace('-', '_')}": value
               for name, value in request.prepare().headers.items()
               if name.lower() not in ("content-type", "content-length")}
    headers.setdefault("HTTP_HOST", "testserver")  # signed: the test client sends none
    return client.generic(method, "/", data, content_type="application/x-amz-json-1.1",
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
    settings.CELERY_TASK_SOFT_TIME_LIMIT = 1e-6
    image = base64.b64encode((darknet_dir / "dog.jpg").read_bytes()).decode()
    body = error_of(call(client, "DetectLabels", {"Image": {"Bytes": image}}, aws), status=500)
    assert body["__type"] == "InternalServerError"
