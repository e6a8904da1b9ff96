"""POST /api/detect/image and the jobs API, with the worker's code run inline."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from jobs.models import Detection, Job
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
    # What answered: the worker's runtime and precision, as its detector resolved them.
    from jobs.inference import get_batcher

    worker = get_batcher().detector()
    assert (body["model"]["runtime"], body["model"]["precision"]) == \
        (worker.runtime, worker.precision)
    assert body["params"] == {"min_confidence": 0.25, "iou_threshold": 0.45, "classes": None,
                              "max_detections": 100}
    assert set(body["timing"]) == {"queue_ms", "inference_ms", "total_ms", "batch_size"}
    labels = {d["label"] for d in body["detections"]}
    assert {"dog", "bicycle"} <= labels and labels & {"car", "truck"}
    assert response["Location"].endswith(f"/api/jobs/{body['id']}")

    job = Job.objects.get(pk=body["id"])
    assert job.original_filename == "dog.jpg"
    assert Detection.objects.filter(job=job).count() == len(body["detections"])
    stored = files_under(settings.MEDIA_ROOT / "uploads")
    assert len(stored) == 1 and stored[0].suffix == ".jpg" and stored[0].name != "dog.jpg"
    # Beside it, the thumbnail the worker made as it finished the job: nothing else.
    assert [p.relative_to(settings.MEDIA_ROOT).as_posix() for p in files_under(
        settings.MEDIA_ROOT / "thumbnails")] == [f"thumbnails/{job.pk}.jpg"]
    assert len(files_under(settings.MEDIA_ROOT)) == 2

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


def test_a_worker_runs_an_image_job_once_and_counts_the_attempt(api, eager_celery, tiny_paths,
                                                                darknet_dir):
    from images import runner

    body = post_image(api, (darknet_dir / "dog.jpg").read_bytes()).json()
    job = Job.objects.get(pk=body["id"])
    assert job.attempts == 1 and job.worker and job.started_at and job.queue_ms is not None
    found = Detection.objects.filter(job=job).count()
    assert found == len(body["detections"]) > 0

    runner.image_job_run(job_id=body["id"])  # a redelivered message: nothing runs again
    job.refresh_from_db()
    assert job.status == "succeeded" and job.attempts == 1
    assert Detection.objects.filter(job=job).count() == found


def _lapsed(job: Job, attempts: int) -> None:
    """The job as its last worker left it, dead: running, its lease lapsed."""
    from datetime import timedelta

    from django.utils import timezone

    now = timezone.now()
    Job.objects.filter(pk=job.pk).update(status="running", attempts=attempts,
                                         started_at=now - timedelta(seconds=70),
                                         lease_expires=now - timedelta(seconds=10))


def test_an_image_whose_workers_all_died_fails_rather_than_running_again(
        eager_celery, tiny_paths, darknet_dir, settings):
    from images import services
    from tests.factories import image_job_with_detections

    job = image_job_with_detections(darknet_dir / "dog.jpg", tiny_paths, "died")
    Detection.objects.filter(job=job).delete()
    _lapsed(job, settings.JOB_MAX_ATTEMPTS)

    assert services.requeue_stalled_images() == [str(job.pk)]  # the message runs inline
    job.refresh_from_db()
    assert job.status == "failed" and job.error_code == "worker_lost"
    assert job.attempts == settings.JOB_MAX_ATTEMPTS  # not started once more
    assert not Detection.objects.filter(job=job).exists()

    _lapsed(job, settings.JOB_MAX_ATTEMPTS - 1)
    assert services.requeue_stalled_images() == [str(job.pk)]  # one attempt left: it runs
    job.refresh_from_db()
    assert job.status == "succeeded" and job.attempts == settings.JOB_MAX_ATTEMPTS
    assert {d.label for d in Detection.objects.filter(job=job)} >= {"dog", "bicycle"}


def test_a_second_message_for_a_job_a_live_worker_holds_is_dropped(tiny_paths, darknet_dir,
                                                                  settings):
    from datetime import timedelta

    from django.utils import timezone

    from images import runner
    from tests.factories import image_job_with_detections

    job = image_job_with_detections(darknet_dir / "dog.jpg", tiny_paths, "held")
    Detection.objects.filter(job=job).delete()
    now = timezone.now()
    for attempts in (1, settings.JOB_MAX_ATTEMPTS):  # its last attempt: still not lost
        Job.objects.filter(pk=job.pk).update(status="running", attempts=attempts,
                                             started_at=now,
                                             lease_expires=now + timedelta(seconds=30))
        runner.image_job_run(job_id=str(job.pk))  # e.g. redelivered by the broker
        job.refresh_from_db()
        assert job.status == "running" and job.attempts == attempts
        assert not Detection.objects.filter(job=job).exists()

    _lapsed(job, 1)  # the holder died after all: the next message runs it
    runner.image_job_run(job_id=str(job.pk))
    job.refresh_from_db()
    assert job.status == "succeeded" and job.attempts == 2


def test_the_heartbeat_renews_the_lease_of_a_job_waiting_in_its_worker(
        tiny_paths, darknet_dir, settings, monkeypatch):
    import threading
    from datetime import timedelta

    from django.db import close_old_connections
    from django.utils import timezone

    from engine.batching import DynamicBatcher
    from images import runner, services
    from jobs import runtime
    from tests.factories import image_job_with_detections

    settings.IMAGE_STALE_SECONDS = 60
    job = image_job_with_detections(darknet_dir / "dog.jpg", tiny_paths, "waiting")
    Detection.objects.filter(job=job).delete()
    Job.objects.filter(pk=job.pk).update(status="queued", attempts=0, started_at=None)

    # The job waits for a forward pass (a busy batcher) until `go` is set.
    submitted, go = threading.Event(), threading.Event()
    submit = DynamicBatcher.submit

    def busy(self, *args, **kwargs):
        submitted.set()
        go.wait(60)
        return submit(self, *args, **kwargs)

    monkeypatch.setattr(DynamicBatcher, "submit", busy)

    def work():
        try:
            runner.image_job_run(job_id=str(job.pk))
        finally:
            close_old_connections()

    worker = threading.Thread(target=work)
    worker.start()
    try:
        assert submitted.wait(60)
        job.refresh_from_db()
        assert job.status == "running" and job.started_at is not None  # its worker has it
        first_lease = job.lease_expires
        later = timezone.now() + timedelta(seconds=45)
        assert runtime.current().renew(now=later)["image"] == 1
        job.refresh_from_db()
        assert job.lease_expires == later + timedelta(seconds=settings.IMAGE_STALE_SECONDS)
        assert job.lease_expires > first_lease  # pushed back, not left to lapse
        # No other worker takes it meanwhile: nothing lapses at the time of the old lease.
        assert services.requeue_stalled_images(now=first_lease + timedelta(seconds=1)) == []
    finally:
        go.set()
        worker.join(60)
    job.refresh_from_db()
    assert job.status == "succeeded" and job.attempts == 1
    assert runtime.current().renew()["image"] == 0  # finished: out of hand


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


def _encoded(darknet_dir, fmt: str, **options) -> bytes:
    import io

    from PIL import Image

    picture = Image.open(darknet_dir / "dog.jpg").convert("RGB")
    out = io.BytesIO()
    picture.save(out, format=fmt, **options)
    return out.getvalue()


def _boxes(body: dict) -> list:
    return [(d["label"], d["confidence"], d["box"]) for d in body["detections"]]


@pytest.mark.parametrize("fmt", ["BMP", "TIFF", "PPM"])
def test_lossless_image_formats_give_the_pngs_detections(api, eager_celery, tiny_paths,
                                                          darknet_dir, fmt):
    # The same pixels in another lossless container: the same detections, exactly. The
    # file name says nothing (".bin"): the format is decided from the content.
    png = post_image(api, _encoded(darknet_dir, "PNG"), name="dog.bin").json()
    response = post_image(api, _encoded(darknet_dir, fmt), name="dog.bin")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "succeeded" and body["image"] == {"width": 768, "height": 576}
    assert _boxes(body) == _boxes(png) and len(png["detections"]) >= 3


@pytest.mark.parametrize(("fmt", "options"), [("GIF", {}), ("WEBP", {"quality": 95})])
def test_lossy_image_formats_are_read(api, eager_celery, tiny_paths, darknet_dir, fmt, options):
    response = post_image(api, _encoded(darknet_dir, fmt, **options), name="dog.bin")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "succeeded" and body["image"] == {"width": 768, "height": 576}
    assert "dog" in {d["label"] for d in body["detections"]}


def test_exif_orientation_is_not_applied(api, eager_celery, tiny_paths, darknet_dir):
    # Orientation 6 ("rotate 90° clockwise to display"): the boxes still refer to the
    # stored pixel grid, 768 x 576, exactly as for the same JPEG without the tag.
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6
    plain = post_image(api, _encoded(darknet_dir, "JPEG", quality=95)).json()
    rotated = post_image(api, _encoded(darknet_dir, "JPEG", quality=95, exif=exif.tobytes()))
    assert rotated.status_code == 201, rotated.json()
    body = rotated.json()
    assert body["image"] == {"width": 768, "height": 576}
    assert _boxes(body) == _boxes(plain) and plain["detections"]


def test_a_job_list_page_holds_at_most_500_jobs(api, user):
    Job.objects.bulk_create(JobFactory.build_batch(501, owner=user))
    page = api.get("/api/jobs", {"page_size": 1000}).json()
    assert page["count"] == 501 and len(page["results"]) == 500 and page["next"]


def test_create_api_token_prints_the_same_token_until_rotated():
    import io

    from django.core.management import call_command
    from rest_framework.test import APIClient

    def token(*options) -> str:
        out = io.StringIO()
        call_command("create_api_token", "carol", *options, stdout=out)
        return out.getvalue().strip().splitlines()[-1].split()[-1]

    first = token()
    assert token() == first  # idempotent: the user's existing token
    rotated = token("--rotate")
    assert rotated != first
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {first}")
    assert client.get("/api/jobs").status_code == 401  # the old token is gone
    client.credentials(HTTP_AUTHORIZATION=f"Token {rotated}")
    assert client.get("/api/jobs").status_code == 200
