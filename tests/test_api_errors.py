"""Every error is a 4xx with one JSON body, and a rejected upload leaves nothing on disk."""

from __future__ import annotations

import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from jobs.models import Job
from tests.conftest import files_under

pytestmark = pytest.mark.django_db(transaction=True)


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, "PNG")
    return buffer.getvalue()


def assert_error(response, status: int, code: str, settings) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert files_under(settings.MEDIA_ROOT) == [], "a rejected upload was left on disk"
    assert not Job.objects.exists(), "a rejected upload left a job behind"
    return body["error"]


def post(api, data: bytes | None, name: str = "upload.jpg", **fields):
    payload = dict(fields)
    if data is not None:
        payload["image"] = SimpleUploadedFile(name, data)
    return api.post("/api/detect/image", payload, format="multipart")


def test_missing_file(api, settings):
    assert_error(post(api, None, min_confidence="0.5"), 400, "missing_file", settings)


def test_empty_file(api, settings):
    assert_error(post(api, b""), 400, "empty_file", settings)


def test_not_an_image(api, settings):
    assert_error(post(api, b"just some text\n" * 20, name="cat.jpg"), 400, "not_an_image",
                 settings)


def test_corrupt_image_header(api, settings):
    data = b"\x89PNG\r\n\x1a\n" + b"\0\0\0\rIHDR" + b"garbage" * 10
    assert_error(post(api, data), 400, "corrupt_image", settings)


def test_truncated_image_found_by_the_worker(api, eager_celery, tiny_paths, darknet_dir,
                                             settings):
    data = (darknet_dir / "dog.jpg").read_bytes()
    error = assert_error(post(api, data[: len(data) // 2]), 400, "corrupt_image", settings)
    assert "truncated" in error["message"] or "corrupt" in error["message"]


@pytest.mark.parametrize(("fields", "field"), [
    ({"min_confidence": "abc"}, "min_confidence"),
    ({"min_confidence": "1.5"}, "min_confidence"),
    ({"iou_threshold": "0"}, "iou_threshold"),
    ({"max_detections": "0"}, "max_detections"),
    ({"classes": "dog,unicorn"}, "classes"),
    ({"min_conf": "0.5"}, "min_conf"),
])
def test_invalid_parameters(api, settings, tiny_paths, darknet_dir, fields, field):
    response = post(api, (darknet_dir / "dog.jpg").read_bytes(), **fields)
    error = assert_error(response, 400, "invalid_parameters", settings)
    assert field in error["details"]


def test_too_large_by_content_length(api, settings, darknet_dir):
    settings.UPLOAD_LIMITS = {"/api/detect/image": 10_000}
    error = assert_error(post(api, (darknet_dir / "dog.jpg").read_bytes()), 413, "too_large",
                         settings)
    assert error["details"] == {"max_bytes": 10_000}


def test_too_large_by_file_size(api, settings, darknet_dir):
    settings.MAX_IMAGE_UPLOAD_BYTES = 10_000  # the file itself, whatever the header said
    assert_error(post(api, (darknet_dir / "dog.jpg").read_bytes()), 413, "too_large", settings)


def test_too_many_pixels(api, settings):
    settings.MAX_IMAGE_PIXELS = 1_000_000
    error = assert_error(post(api, png(1001, 1000)), 413, "too_large", settings)
    assert error["details"] == {"max_pixels": 1_000_000}


def test_a_video_is_an_unsupported_media_type(api, settings, videos_dir):
    data = (videos_dir / "intel_people-detection_from_gif.mp4").read_bytes()
    error = assert_error(post(api, data, name="clip.jpg"), 415, "unsupported_media_type",
                         settings)
    assert error["details"]["detected"] == "video/mp4"


def test_a_pdf_is_an_unsupported_media_type(api, settings):
    data = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n"
    assert_error(post(api, data), 415, "unsupported_media_type", settings)


def test_a_json_body_is_an_unsupported_media_type(api, settings):
    response = api.post("/api/detect/image", {"image": "dog.jpg"}, format="json")
    assert_error(response, 415, "unsupported_media_type", settings)


def test_unknown_urls_and_methods_are_json(api, client, settings):
    assert_error(client.get("/no/such/page"), 404, "not_found", settings)
    assert_error(api.get("/api/detect/image"), 405, "method_not_allowed", settings)
    assert_error(api.get("/api/jobs/not-a-uuid"), 404, "not_found", settings)


def test_an_unexpected_failure_is_a_json_500_not_an_html_page(api, settings, monkeypatch,
                                                              darknet_dir):
    from images import services

    def explode(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(services, "image_job_submit", explode)
    response = post(api, (darknet_dir / "dog.jpg").read_bytes())
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert "boom" not in response.content.decode()


def test_the_root_and_api_index_name_addresses_that_answer(client, api):
    root = client.get("/").json()
    index = client.get(root["api"].replace("http://testserver", ""))
    assert index.status_code == 200
    endpoints = index.json()["endpoints"]
    assert endpoints["jobs"] == "http://testserver/api/jobs"
    for name in ("jobs", "schema"):
        assert api.get(endpoints[name].replace("http://testserver", "")).status_code == 200
    assert client.post("/api/").status_code == 405


def test_a_multipart_body_that_cannot_be_parsed_is_a_malformed_request(api, settings):
    response = api.generic("POST", "/api/detect/image", b"--xyz\r\nnot a part",
                           content_type="multipart/form-data; boundary=")
    assert_error(response, 400, "malformed_request", settings)


def test_the_annotated_video_of_an_unfinished_job_is_not_ready(api, user, settings):
    from tests.factories import JobFactory

    job = JobFactory(owner=user, kind="video", status="running")
    response = api.get(f"/api/jobs/{job.pk}/annotated")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "not_ready"


def test_the_annotated_video_of_an_image_job_is_not_a_video_job(api, user):
    from tests.factories import JobFactory

    job = JobFactory(owner=user, kind="image")
    response = api.get(f"/api/jobs/{job.pk}/annotated")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "not_a_video_job"


def test_an_image_job_whose_input_is_gone_fails_with_input_missing(eager_celery, user):
    from images import runner
    from tests.factories import JobFactory

    job = JobFactory(owner=user, kind="image", status="queued", input_file="images/gone.jpg")
    runner.image_job_run(job_id=str(job.pk))
    job.refresh_from_db()
    assert (job.status, job.error_code) == ("failed", "input_missing")


def test_an_image_whose_inference_outlasts_the_soft_limit_fails_with_timeout(
        api, eager_celery, tiny_paths, darknet_dir, settings):
    # A real forward pass (tens of milliseconds) against a limit of a microsecond.
    settings.IMAGE_TASK_SOFT_TIME_LIMIT = 1e-6
    settings.DETECT_WAIT_SECONDS = 5
    response = post(api, (darknet_dir / "dog.jpg").read_bytes())
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "failed" and body["error"]["code"] == "timeout"
    assert "did not finish within" in body["error"]["message"]


def test_an_image_for_a_model_whose_files_are_missing_fails_with_model_unavailable(
        api, eager_celery, tiny_paths, darknet_dir, settings, tmp_path):
    # A weights folder with the class names but no cfg or weights for the chosen model.
    (tmp_path / tiny_paths.names.name).write_bytes(tiny_paths.names.read_bytes())
    settings.WEIGHTS_DIR = tmp_path
    settings.DETECTOR_MODEL = "yolov3-spp"
    settings.DETECT_WAIT_SECONDS = 5
    response = post(api, (darknet_dir / "dog.jpg").read_bytes())
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "failed", body
    assert body["error"]["code"] == "model_unavailable"
    assert "yolov3-spp.cfg" in body["error"]["message"]
    assert "fetch_weights --model yolov3-spp" in body["error"]["message"]


def test_a_deepstack_body_refused_from_its_length_is_in_deepstacks_shape(client, settings):
    settings.UPLOAD_LIMITS = {**settings.UPLOAD_LIMITS, "/v1/vision/detection": 1000}
    body = b"x" * (1000 + 64 * 1024 + 1)  # past the limit and the multipart envelope
    response = client.post("/v1/vision/detection", body, content_type="image/jpeg")
    assert response.status_code == 413
    answer = response.json()
    assert answer["success"] is False and "upload limit is 1000" in answer["error"]


def test_deepstack_answers_413_429_and_500_in_its_own_shape(client, user, eager_celery,
                                                            tiny_paths, darknet_dir, settings):
    from rest_framework.authtoken.models import Token

    key = Token.objects.create(user=user).key
    dog = (darknet_dir / "dog.jpg").read_bytes()

    def detect():
        return client.post("/v1/vision/detection", {
            "image": SimpleUploadedFile("dog.jpg", dog), "api_key": key})

    settings.THROTTLE_DETECT_RATE = "1/day"
    # The detector does not answer in time (a real forward pass against a microsecond).
    settings.IMAGE_TASK_SOFT_TIME_LIMIT = 1e-6
    failed = detect()
    throttled = detect()  # the second upload today
    settings.THROTTLE_DETECT_RATE = "1000/day"
    settings.MAX_IMAGE_UPLOAD_BYTES = len(dog) - 1
    too_large = detect()
    assert [r.status_code for r in (too_large, failed, throttled)] == [413, 500, 429], [
        r.content for r in (too_large, failed, throttled)]
    for response in (too_large, failed, throttled):
        body = response.json()
        assert body["success"] is False and body["error"]
    assert int(throttled["Retry-After"]) >= 1
