"""POST /api/detect/image and the jobs API, with the worker's code run inline."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from detection.models import Detection, Job
from tests.conftest import files_under
from tests.factories import DetectionFactory, JobFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)


def post_image(api, data: bytes, name: str = "photo.jpg", **params):
    return api.post("/api/detect/image", {"image": SimpleUploadedFile(name, data), **params},
                    format="multipart")


def test_it_detects_stores_and_returns_an_image_job(api, eager_celery, tiny_paths, darknet_dir,
                                                    settings):
    response = post_image(api, (darknet_dir / "dog.jpg").read_bytes(), name="dog.jpg")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["kind"] == "image" and body["status"] == "succeeded"
    assert body["image"] == {"width": 768, "height": 576}
    assert body["model"]["name"] == "yolov3-tiny"
    assert body["model"]["sha256"] == ("dccea06f59b781ec1234ddf8d1e94b9519a97f4245748a7d4db75d5b"
                                       "7080a42c")
    assert body["params"] == {"min_confidence": 0.25, "iou_threshold": 0.45, "classes": None,
                              "max_detections": 100}
    assert set(body["timing"]) == {"queue_ms", "inference_ms", "total_ms", "batch_size"}
    labels = {d["label"] for d in body["detections"]}
    assert {"dog", "bicycle"} <= labels and labels & {"car", "truck"}
    assert response["Location"].endswith(f"/api/jobs/{body['id']}")

    job = Job.objects.get(pk=body["id"])
    assert job.original_filename == "dog.jpg"
    assert Detection.objects.filter(job=job).count() == len(body["detections"])
    stored = files_under(settings.MEDIA_ROOT)
    assert len(stored) == 1 and stored[0].suffix == ".jpg" and stored[0].name != "dog.jpg"

    again = api.get(reverse("job-detail", args=[body["id"]]))
    assert again.status_code == 200
    assert again.json() == body


def test_parameters_are_applied_and_recorded(api, eager_celery, tiny_paths, darknet_dir):
    response = post_image(api, (darknet_dir / "dog.jpg").read_bytes(), classes="dog,bicycle",
                          min_confidence="0.3", max_detections="1", iou_threshold="0.5")
    assert response.status_code == 201
    body = response.json()
    assert body["params"] == {"min_confidence": 0.3, "iou_threshold": 0.5,
                              "classes": ["bicycle", "dog"], "max_detections": 1}
    assert len(body["detections"]) == 1
    assert body["detections"][0]["label"] in ("dog", "bicycle")
    assert body["detections"][0]["confidence"] > 0.3


def test_a_job_still_running_when_the_wait_ends_is_a_202(api, tiny_paths, darknet_dir,
                                                         settings):
    from pmr.celery import app

    settings.DETECT_WAIT_SECONDS = 0
    app.conf.broker_url = "memory://"  # nobody consumes it: the job stays queued
    try:
        response = post_image(api, (darknet_dir / "dog.jpg").read_bytes())
    finally:
        app.conf.broker_url = settings.CELERY_BROKER_URL
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued"
    assert response["Location"].endswith(f"/api/jobs/{body['id']}")
    assert body["status_url"].endswith(f"/api/jobs/{body['id']}")


def test_the_job_list_is_the_callers_own_paginated_and_filterable(api, user):
    JobFactory.create_batch(3, owner=user, kind="image", status="succeeded")
    failed_video = JobFactory(owner=user, kind="video", status="failed")
    JobFactory.create_batch(2, owner=UserFactory())  # someone else's
    DetectionFactory.create_batch(4, job=failed_video)

    page = api.get("/api/jobs", {"page_size": 2}).json()
    assert page["count"] == 4 and len(page["results"]) == 2 and page["next"]
    videos = api.get("/api/jobs", {"kind": "video", "status": "failed"}).json()
    assert [j["id"] for j in videos["results"]] == [str(failed_video.pk)]
    assert videos["results"][0]["detection_count"] == 4
    bad = api.get("/api/jobs", {"status": "exploded"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_parameters"


def test_another_users_job_is_a_404(api):
    theirs = JobFactory(owner=UserFactory())
    response = api.get(reverse("job-detail", args=[theirs.pk]))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_deleting_a_job_removes_its_records_and_file(api, eager_celery, tiny_paths, darknet_dir,
                                                     settings):
    body = post_image(api, (darknet_dir / "dog.jpg").read_bytes()).json()
    assert files_under(settings.MEDIA_ROOT)
    response = api.delete(reverse("job-detail", args=[body["id"]]))
    assert response.status_code == 204
    assert not Job.objects.filter(pk=body["id"]).exists()
    assert not Detection.objects.filter(job_id=body["id"]).exists()
    assert files_under(settings.MEDIA_ROOT) == []


def test_anonymous_callers_are_refused():
    from rest_framework.test import APIClient

    response = APIClient().get("/api/jobs")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_token_authentication_works(user):
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    assert client.get("/api/jobs").status_code == 200
    client.credentials(HTTP_AUTHORIZATION="Token not-a-token")
    response = client.get("/api/jobs")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"


def test_the_schema_and_docs_are_served(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert {"/api/detect/image", "/api/jobs", "/api/jobs/{job_id}"} <= set(paths)
    docs = client.get("/api/docs/")
    assert docs.status_code == 200 and b"swagger" in docs.content.lower()


def test_healthz_is_always_up(client):
    assert client.get("/healthz").json() == {"status": "ok"}
