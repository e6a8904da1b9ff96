"""Settings come from the environment, and bad values stop the process at start-up."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from core import env


def manage_check(**environment: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", "check"], cwd=settings.BASE_DIR,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **environment})


@pytest.mark.parametrize(("name", "value", "message"), [
    ("DEBUG", "maybe", "DEBUG='maybe': expected one of true/false"),
    ("DETECTOR_DEVICE", "gpu", "DETECTOR_DEVICE='gpu'"),
    ("DETECTOR_MODEL", "yolo v9/x", "DETECTOR_MODEL='yolo v9/x': not a model's name"),
    ("DETECTOR_RUNTIME", "tensorrt", "DETECTOR_RUNTIME='tensorrt': expected one of auto, torch, "
     "openvino, onnxruntime"),
    ("DETECTOR_MAX_BATCH", "-1", "DETECTOR_MAX_BATCH=-1: must be at least 0"),
    ("DETECTOR_INPUT_SIZE", "500", "must be a multiple of 32"),
    ("MAX_IMAGE_UPLOAD_BYTES", "20MB", "MAX_IMAGE_UPLOAD_BYTES='20MB': expected an integer"),
    ("CELERY_BROKER_URL", "kafka://x", "CELERY_BROKER_URL='kafka://x'"),
    ("DATABASE_URL", "nosuchdb://x", "DATABASE_URL='nosuchdb://x'"),
    ("IMAGE_STALE_SECONDS", "3", "IMAGE_STALE_SECONDS=3.0: must be at least twice "
     "WORKER_HEARTBEAT_SECONDS"),
])
def test_a_bad_value_fails_loudly_at_start_up(name, value, message):
    result = manage_check(**{name: value})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert message in result.stderr


def test_the_defaults_need_no_server():
    clean = {k: v for k, v in os.environ.items()
             if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL")}
    result = subprocess.run([sys.executable, "-c", (
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'pmr.settings'; "
        "django.setup(); from django.conf import settings as s; "
        "print(s.DATABASES['default']['ENGINE'], s.CELERY_BROKER_URL, s.DETECTOR_MODEL, "
        "s.DEBUG, s.REST_FRAMEWORK['DEFAULT_PERMISSION_CLASSES'][0])")],
        cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=60, env=clean)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["django.db.backends.sqlite3", "filesystem://", "yolov3-tiny",
                                     "False", "rest_framework.permissions.IsAuthenticated"]


def test_anonymous_access_is_a_setting():
    result = subprocess.run([sys.executable, "-c", (
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'pmr.settings'; "
        "django.setup(); from django.conf import settings as s; "
        "print(s.REST_FRAMEWORK['DEFAULT_PERMISSION_CLASSES'][0])")],
        cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=60,
        env={**os.environ, "ALLOW_ANONYMOUS": "true"})
    assert result.stdout.strip() == "rest_framework.permissions.AllowAny"


def test_a_secret_can_come_from_a_file(tmp_path, monkeypatch):
    secret = tmp_path / "secret"
    secret.write_text("from-a-file\n")
    monkeypatch.delenv("PMR_TEST_SECRET", raising=False)
    monkeypatch.setenv("PMR_TEST_SECRET_FILE", str(secret))
    assert env.env_secret("PMR_TEST_SECRET") == "from-a-file"
    monkeypatch.setenv("PMR_TEST_SECRET", "direct")
    with pytest.raises(ImproperlyConfigured, match="not both"):
        env.env_secret("PMR_TEST_SECRET")


def test_without_a_secret_one_is_generated_once_and_kept(tmp_path, monkeypatch):
    monkeypatch.delenv("PMR_TEST_SECRET", raising=False)
    monkeypatch.delenv("PMR_TEST_SECRET_FILE", raising=False)
    first = env.env_secret("PMR_TEST_SECRET", default_file=tmp_path / "key")
    assert len(first) >= 40
    assert env.env_secret("PMR_TEST_SECRET", default_file=tmp_path / "key") == first
    assert oct((tmp_path / "key").stat().st_mode & 0o777) == "0o600"


def test_a_workers_connection_pool_holds_a_connection_per_thread(settings):
    from pmr.worker import pool_fit_threads

    databases = {"default": {**settings.DATABASES["default"],
                             "OPTIONS": {"pool": {"min_size": 2, "max_size": 20}}}}
    settings.DATABASES = databases
    assert pool_fit_threads(8) == 20  # room enough already
    assert pool_fit_threads(24) == 27  # 24 task threads, the heartbeat, the watchdog, a spare
    assert databases["default"]["OPTIONS"]["pool"]["max_size"] == 27
    settings.DATABASES = {"default": {**databases["default"], "OPTIONS": {}}}
    assert pool_fit_threads(24) is None  # SQLite: no pool


def test_time_limits_bound_image_tasks_only():
    # Celery's prefork pool enforces a task's limits; a video part or an annotation takes
    # as long as its video does, so no global limit may reach them.
    from django.conf import settings

    from images.tasks import detect_image
    from jobs.tasks import send_webhook
    from pmr.celery import app
    from videos.tasks import annotate_video, process_video_part

    assert app.conf.task_time_limit is None and app.conf.task_soft_time_limit is None
    assert (detect_image.soft_time_limit, detect_image.time_limit) == (
        settings.IMAGE_TASK_SOFT_TIME_LIMIT, settings.IMAGE_TASK_TIME_LIMIT) == (300, 330)
    for task in (process_video_part, annotate_video, send_webhook):
        assert task.soft_time_limit is None and task.time_limit is None


@pytest.mark.parametrize(("environment", "expected"), [
    ({}, "FileBasedCache var/cache"),  # filesystem broker: files under PMR_VAR_DIR
    ({"CELERY_BROKER_URL": "redis://127.0.0.1:6379/3"}, "RedisCache redis://127.0.0.1:6379/3"),
    ({"CELERY_BROKER_URL": "redis://127.0.0.1:6379/3", "CACHE_URL": "redis://10.1.1.1:6379/7"},
     "RedisCache redis://10.1.1.1:6379/7"),
])
def test_rate_counters_live_where_cache_url_says(tmp_path, environment, expected):
    clean = {k: v for k, v in os.environ.items()
             if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "CACHE_URL")}
    result = subprocess.run([sys.executable, "-c", (
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'pmr.settings'; "
        "django.setup(); from django.conf import settings as s; c = s.CACHES['default']; "
        "print(c['BACKEND'].rsplit('.', 1)[1], c['LOCATION'])")],
        cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=60,
        env={**clean, "PMR_VAR_DIR": str(tmp_path / "var"), **environment})
    assert result.returncode == 0, result.stderr
    backend, location = expected.split()
    assert result.stdout.split() == [
        backend, location if backend == "RedisCache" else str(tmp_path / location)]
