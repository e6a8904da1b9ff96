"""Shared fixtures: paths to ../shared test data and the fetched weights, loaded detectors."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NoReturn

import pytest
from django.conf import settings

from engine import model_info
from engine.detector import Detector

SHARED = Path(settings.BASE_DIR).parent / "shared" / "testdata"
DARKNET = SHARED / "darknet"
COCO128 = SHARED / "coco128_val2017"
VIDEOS = SHARED / "videos"


def strict() -> bool:
    """In CI (CI=true), or wherever the suite is pointed at real services (REDIS_URL,
    DATABASE_URL), nothing a test needs may be missing: a skip would hide it."""
    return (os.environ.get("CI", "").lower() in ("1", "true", "yes")
            or bool(os.environ.get("REDIS_URL") or os.environ.get("DATABASE_URL")))


def missing(reason: str) -> NoReturn:
    """Skip a test for want of something (a newcomer's plain `make test`); fail it when
    strict()."""
    if strict():
        pytest.fail(f"{reason} (CI=true or REDIS_URL/DATABASE_URL set: a missing "
                    "requirement fails the run)", pytrace=False)
    pytest.skip(reason)


def _require(path: Path) -> Path:
    if not path.exists():
        missing(f"{path} is absent: the shared test data lives in ../shared/testdata "
                "beside the project checkout")
    return path


@pytest.fixture(scope="session")
def darknet_dir() -> Path:
    return _require(DARKNET)


@pytest.fixture(scope="session")
def coco128_dir() -> Path:
    return _require(COCO128)


@pytest.fixture(scope="session")
def videos_dir() -> Path:
    return _require(VIDEOS)


@pytest.fixture(scope="session")
def reference_detections(darknet_dir) -> dict:
    return json.loads((darknet_dir / "reference_yolov3-tiny.json").read_text())["images"]


@pytest.fixture(scope="session")
def tiny_paths():
    paths = model_info("yolov3-tiny").paths(settings.WEIGHTS_DIR)
    if paths.missing():
        missing("yolov3-tiny weights are not fetched: run 'python manage.py fetch_weights' "
                    "(make test does)")
    return paths


@pytest.fixture(scope="session")
def tiny_fp32(tiny_paths) -> Detector:
    """PyTorch in fp32: the reference every other runtime is held to."""
    return Detector.from_files(tiny_paths.cfg, tiny_paths.weights, tiny_paths.names,
                               device="cpu", precision="fp32", runtime="torch")


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory) -> Path:
    """The run's own export cache: each runtime exports yolov3-tiny once per run (never
    read from an earlier run's files in weights/compiled)."""
    return tmp_path_factory.mktemp("compiled")


def require_runtime(runtime: str) -> None:
    """Skip (fail when strict()) where the runtime's packages are missing; OpenVINO off
    x86-64 is simply skipped: requirements.txt installs it there only."""
    from engine import runtimes
    from engine.detector import is_x86_64

    if runtimes.is_installed(runtime):
        return
    reason = f"the {runtime} runtime is not installed ({', '.join(runtimes.PACKAGES[runtime])})"
    if runtime == "openvino" and not is_x86_64():
        pytest.skip(f"{reason}: requirements.txt installs it on x86-64 only")
    missing(reason)


def _tiny_on(runtime: str, tiny_paths, export_dir: Path) -> Detector:
    require_runtime(runtime)
    return Detector.from_files(tiny_paths.cfg, tiny_paths.weights, tiny_paths.names,
                               device="cpu", precision="fp32", runtime=runtime,
                               cache_dir=export_dir)


@pytest.fixture(scope="session")
def tiny_openvino(tiny_paths, export_dir) -> Detector:
    return _tiny_on("openvino", tiny_paths, export_dir)


@pytest.fixture(scope="session")
def tiny_onnxruntime(tiny_paths, export_dir) -> Detector:
    return _tiny_on("onnxruntime", tiny_paths, export_dir)


@pytest.fixture(params=["torch", "openvino", "onnxruntime"])
def fp32_detector(request) -> Detector:
    """yolov3-tiny in fp32 on each runtime (each built once per run)."""
    fixture = {"torch": "tiny_fp32", "openvino": "tiny_openvino",
               "onnxruntime": "tiny_onnxruntime"}[request.param]
    return request.getfixturevalue(fixture)


@pytest.fixture(scope="session")
def tiny_bf16(tiny_paths) -> Detector:
    from engine.detector import cpu_has_native_bf16

    if not cpu_has_native_bf16():
        pytest.skip("this CPU has no native bf16 (AVX512-BF16 or AMX)")
    return Detector.from_files(tiny_paths.cfg, tiny_paths.weights, tiny_paths.names,
                               device="cpu", precision="bf16", runtime="torch")


# --- Django / API fixtures --------------------------------------------------------------

@pytest.fixture(autouse=True)
def _isolated_media(settings, tmp_path_factory):
    """Each test gets its own MEDIA_ROOT, so that "nothing left on disk" can be checked."""
    settings.MEDIA_ROOT = tmp_path_factory.mktemp("media")
    settings.MODEL_CACHE_DIR = tmp_path_factory.mktemp("model-cache")


@pytest.fixture(autouse=True)
def _fresh_cache(settings):
    """Rate counters start from zero in every test (an in-memory cache per test)."""
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    from django.core.cache import cache

    cache.clear()


@pytest.fixture
def eager_celery():
    """Unit tests run tasks inline (integration tests start real workers)."""
    from pmr.celery import app

    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    yield app
    app.conf.task_always_eager = False
    app.conf.task_eager_propagates = False


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in Path(root).rglob("*") if p.is_file())


@pytest.fixture
def user(db):
    from tests.factories import UserFactory

    return UserFactory()


@pytest.fixture
def api(user):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture(scope="session", autouse=True)
def _close_database_pools(django_db_setup, django_db_blocker):
    """Close PostgreSQL connection pools (and any connection a server thread kept) before
    pytest-django drops the test database."""
    yield
    from django.db import connection, connections

    with django_db_blocker.unblock():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                               "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        for each in connections.all():
            each.close()
            if getattr(each, "pool", None) is not None:
                each.close_pool()
