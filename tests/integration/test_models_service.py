"""Custom models in a running PMR (gunicorn + a Celery worker): uploaded over HTTP, chosen
per request, served side by side by one worker without a restart, a new version picked up
while requests run — and answered through boto3's detect_custom_labels as through the
native API."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.custom_model import KEPT, write_three_class_model
from tests.integration.service import Service
from tests.integration.test_compat import rekognition

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def service(tmp_path_factory, tiny_paths):
    with Service.running(tmp_path_factory.mktemp("pmr-models")) as running:
        running.staff = running.manage("create_api_token", "modeller",
                                       "--staff").stdout.strip().splitlines()[-1]
        yield running


@pytest.fixture(scope="module")
def tiny3(tiny_paths, tmp_path_factory) -> dict:
    return write_three_class_model(tiny_paths, tmp_path_factory.mktemp("tiny3"))


def upload(service: Service, files: dict, name: str = "tiny3") -> requests.Response:
    opened = {kind: (f"{name}.{kind}", files[kind] if isinstance(files[kind], bytes)
                     else files[kind].read_bytes()) for kind in ("cfg", "weights", "names")}
    return requests.post(f"{service.base_url}/api/models", headers=service.headers(service.staff),
                         files=opened, data={"name": name}, timeout=120)


def detect(service: Service, image: bytes, **params) -> dict:
    response = requests.post(f"{service.base_url}/api/detect/image",
                             headers=service.headers(), files={"image": ("i.jpg", image)},
                             data=params, timeout=300)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "succeeded", body
    return body


def test_upload_is_staff_only_and_the_model_answers_through_boto3_as_natively(
        service, tiny3, darknet_dir):
    refused = requests.post(f"{service.base_url}/api/models", headers=service.headers(),
                            files={kind: ("f", b"x") for kind in ("cfg", "weights", "names")},
                            data={"name": "tiny3"}, timeout=60)
    assert refused.status_code == 403
    created = upload(service, tiny3)
    assert created.status_code in (200, 201), created.text
    assert created.json()["ref"] == "tiny3@1"

    image = (darknet_dir / "dog.jpg").read_bytes()
    native = detect(service, image, model="tiny3", min_confidence="0.3")
    assert native["model"]["name"] == "tiny3" and native["model"]["version"] == 1
    assert {d["label"] for d in native["detections"]} <= set(KEPT)
    assert "dog" in {d["label"] for d in native["detections"]}
    arn = ("arn:aws:rekognition:us-east-1:123456789012:project/tiny3/version/tiny3.1/"
           "1700000000000")
    answer = rekognition(service).detect_custom_labels(ProjectVersionArn=arn,
                                                       Image={"Bytes": image}, MinConfidence=30)
    width, height = native["image"]["width"], native["image"]["height"]
    got = sorted((label["Name"], label["Geometry"]["BoundingBox"]["Left"] * width,
                  label["Geometry"]["BoundingBox"]["Top"] * height, label["Confidence"])
                 for label in answer["CustomLabels"])
    wanted = sorted((d["label"], d["box"]["x1"], d["box"]["y1"], 100 * d["confidence"])
                    for d in native["detections"])
    assert len(got) == len(wanted)
    for mine, theirs in zip(got, wanted, strict=True):
        assert mine[0] == theirs[0]
        assert mine[1:] == pytest.approx(theirs[1:], abs=0.02)
    client = rekognition(service)
    with pytest.raises(client.exceptions.InvalidParameterException):
        client.detect_custom_labels(ProjectVersionArn="arn:aws:s3:::some-bucket/object",
                                    Image={"Bytes": image})
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.detect_custom_labels(
            ProjectVersionArn=arn.replace("tiny3", "nosuch"),
            Image={"Bytes": image})


def test_one_worker_serves_two_models_alternately_and_a_new_version_without_restart(
        service, tiny3, tiny_paths, darknet_dir, tmp_path):
    assert upload(service, tiny3).status_code in (200, 201)
    first = service.get("/readyz").json()["checks"]["workers"]["workers"][0]
    image = (darknet_dir / "person.jpg").read_bytes()
    other = write_three_class_model(tiny_paths, tmp_path, suffix="-v2")
    weights = bytearray(other["weights"].read_bytes())
    weights[-4:] = b"\0\0\0\0"  # retrained: other numbers, the same layout
    new_version: dict = {}
    uploaded = threading.Event()

    def request(index: int) -> tuple[int, dict, float]:
        if index == 12:  # mid-run, a new version of tiny3
            response = upload(service, {**other, "weights": bytes(weights)})
            new_version.update(response.json())
            uploaded.set()
        elif index > 16:  # the last requests come once it is uploaded, as the first did not
            uploaded.wait(timeout=300)
        asked = time.monotonic()
        model = "tiny3" if index % 2 else "yolov3-tiny"
        return index, detect(service, image, model=model), asked

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(request, range(32)))
    assert new_version["version"] == 2 and new_version["default"] is True
    versions = {1: 0, 2: 0}
    for index, body, _ in answers:
        if index % 2:
            assert body["model"]["name"] == "tiny3"
            versions[body["model"]["version"]] += 1
            assert {d["label"] for d in body["detections"]} <= set(KEPT)
        else:
            assert body["model"]["name"] == "yolov3-tiny"
    assert versions[1] and versions[2], versions  # both served; none lost (32 answers)
    assert len(answers) == 32
    # After the upload answered, every new request runs version 2.
    after = detect(service, image, model="tiny3")
    assert after["model"]["version"] == 2
    assert after["model"]["sha256"] == new_version["sha256"]["weights"]
    workers = service.get("/readyz").json()["checks"]["workers"]["workers"]
    assert len(workers) == 1 and workers[0]["hostname"] == first["hostname"]
    deadline = time.monotonic() + 60
    while not {"tiny3@1", "tiny3@2", "yolov3-tiny"} <= set(workers[0]["models_loaded"]):
        assert time.monotonic() < deadline, workers  # the heartbeat says what is loaded
        time.sleep(0.5)
        workers = service.get("/readyz").json()["checks"]["workers"]["workers"]
    # The same worker process all along: started once, warmed up once.
    assert service.processes["worker1"].poll() is None
    assert service.log("worker1", tail=10**7).count("warmed up in") == 1
