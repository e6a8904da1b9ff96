"""Uploads and outputs in an S3-compatible object store, shared by web and workers.

The store is moto's S3 server (a real HTTP server speaking the S3 protocol), started
here; in production it is MinIO or S3 (docker-compose's "s3" profile).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import boto3
import pytest
import requests

from tests.conftest import files_under
from tests.integration.service import Service, free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory):
    server = shutil.which("moto_server") or str(__import__("pathlib").Path(sys.executable)
                                                 .with_name("moto_server"))
    port = free_port()
    process = subprocess.Popen([server, "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            requests.get(url, timeout=1)
            break
        except requests.ConnectionError:
            time.sleep(0.1)
    yield url
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="module")
def s3_service(tmp_path_factory, s3_endpoint, tiny_paths):
    env = {"STORAGE_BACKEND": "s3", "S3_ENDPOINT_URL": s3_endpoint, "S3_BUCKET": "pmr-media",
           "S3_ACCESS_KEY_ID": "testing", "S3_SECRET_ACCESS_KEY": "testing",
           "AWS_EC2_METADATA_DISABLED": "true"}
    running = Service.create(tmp_path_factory.mktemp("pmr-s3"), **env)
    try:
        assert "created" in running.manage("ensure_storage").stdout
        assert "exists" in running.manage("ensure_storage").stdout  # idempotent
        running.start_worker()
        running.start_web()
        running.wait_ready()
        yield running
    finally:
        running.close()


def bucket_keys(endpoint: str) -> list[str]:
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket="pmr-media").get("Contents", []))


def test_images_and_videos_go_through_the_object_store(s3_service, s3_endpoint, darknet_dir,
                                                       videos_dir):
    image = s3_service.post_image(darknet_dir / "dog.jpg")
    assert image.status_code == 201, image.text
    assert {"dog", "bicycle"} <= {d["label"] for d in image.json()["detections"]}

    video = s3_service.post_video(videos_dir / "intel_people-detection_from_gif.mp4",
                                  annotate="true")
    job = s3_service.wait_job(video.headers["Location"])
    assert job["status"] == "succeeded", job["error"]
    assert job["progress"]["frames_done"] == 23  # read from the store through a presigned URL
    annotated = s3_service.get(job["annotated_url"])
    assert annotated.status_code == 200 and annotated.content[4:8] == b"ftyp"

    keys = bucket_keys(s3_endpoint)
    assert sum(k.startswith("uploads/images/") for k in keys) == 1
    assert sum(k.startswith("uploads/videos/") for k in keys) == 1
    assert sum(k.startswith("uploads/annotated/") for k in keys) == 1
    assert files_under(s3_service.workdir / "media") == []  # nothing on local disk

    for url in (image.headers["Location"], video.headers["Location"]):
        assert requests.delete(url, headers=s3_service.headers(), timeout=30).status_code == 204
    assert bucket_keys(s3_endpoint) == []


def test_rekognition_reads_images_from_the_object_store(s3_service, s3_endpoint, darknet_dir):
    from tests.integration.test_compat import error_type, rekognition

    store = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="testing",
                         aws_secret_access_key="testing", region_name="us-east-1")
    store.create_bucket(Bucket="customer-photos")
    store.upload_file(str(darknet_dir / "eagle.jpg"), "customer-photos", "birds/eagle.jpg")
    client = rekognition(s3_service, "aws-s3-reader")
    answer = client.detect_labels(
        Image={"S3Object": {"Bucket": "customer-photos", "Name": "birds/eagle.jpg"}},
        MinConfidence=30)
    assert [label["Name"] for label in answer["Labels"]] == ["Bird"]
    missing = {"S3Object": {"Bucket": "customer-photos", "Name": "birds/none.jpg"}}
    assert error_type(lambda: client.detect_labels(Image=missing)) == "InvalidS3ObjectException"


def test_rekognition_starts_a_video_from_the_object_store(s3_service, s3_endpoint, videos_dir):
    from tests.integration.test_compat import rekognition

    store = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="testing",
                         aws_secret_access_key="testing", region_name="us-east-1")
    store.create_bucket(Bucket="customer-videos")
    store.upload_file(str(videos_dir / "intel_people-detection_from_gif.mp4"),
                      "customer-videos", "people.mp4")
    client = rekognition(s3_service, "aws-s3-video")
    job_id = client.start_label_detection(
        Video={"S3Object": {"Bucket": "customer-videos", "Name": "people.mp4"}})["JobId"]
    job = s3_service.wait_job(f"{s3_service.base_url}/api/jobs/{job_id}",
                              token=s3_service.manage("create_api_token", "aws-s3-video")
                              .stdout.strip())
    assert job["status"] == "succeeded" and job["progress"]["frames_done"] == 23
    answer = client.get_label_detection(JobId=job_id)
    assert answer["JobStatus"] == "SUCCEEDED" and answer["VideoMetadata"]["FrameRate"] > 0
