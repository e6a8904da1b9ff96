"""docker-compose.yml, the Dockerfile and .env.example, checked without a Docker engine."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from django.conf import settings

ROOT = Path(settings.BASE_DIR)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def test_the_stack_has_web_workers_redis_and_postgres(compose):
    services = compose["services"]
    assert {"web", "worker", "redis", "postgres", "migrate"} <= set(services)
    assert services["redis"]["image"].startswith("redis:7")
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["web"]["build"]["target"] == "cpu"
    assert services["worker"]["build"]["target"] == "cuda"
    assert services["web"]["command"] == ["web"] and services["worker"]["command"] == ["worker"]
    assert services["web"]["ports"] == ["${PMR_PORT:-8000}:8000"]
    # Optional extras live behind profiles, so that `docker compose up` starts the core.
    assert services["minio"]["profiles"] == ["s3"]
    assert services["flower"]["profiles"] == ["flower"]
    assert services["worker-cpu"]["profiles"] == ["cpu"]


def test_the_worker_reserves_a_gpu_and_can_be_scaled(compose):
    worker = compose["services"]["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    # --scale needs containers without fixed names or host ports.
    assert "container_name" not in worker and "ports" not in worker
    assert worker["environment"]["DETECTOR_DEVICE"] == "cuda"


def test_services_share_media_and_weights_and_keep_their_data(compose):
    declared = set(compose["volumes"])
    assert {"media", "weights", "pgdata", "redisdata"} <= declared
    for name in ("web", "worker", "worker-cpu", "migrate"):
        mounts = compose["services"][name]["volumes"]
        assert "media:/app/media" in mounts and "weights:/app/weights" in mounts
    assert compose["services"]["postgres"]["volumes"] == ["pgdata:/var/lib/postgresql/data"]
    assert "--appendonly" in compose["services"]["redis"]["command"]


def test_start_order_and_health(compose):
    services = compose["services"]
    for name in ("web", "worker", "redis", "postgres", "worker-cpu"):
        assert services[name]["healthcheck"]["test"], name
    assert services["web"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["worker"]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_the_app_points_at_the_compose_database_and_broker(compose):
    for name in ("web", "worker", "migrate"):
        env = compose["services"][name]["environment"]
        assert env["DATABASE_URL"].startswith("postgres://pmr:") and "@postgres:5432/pmr" in \
            env["DATABASE_URL"]
        assert env["CELERY_BROKER_URL"] == "redis://redis:6379/0"
        assert compose["services"][name]["env_file"] == ".env"


def test_the_dockerfile_builds_both_targets_as_a_non_root_user(dockerfile):
    stages = {stage: image for image, stage in
              re.findall(r"^FROM (\S+) AS (\S+)$", dockerfile, re.MULTILINE)}
    assert {"cpu", "cuda", "build-cpu", "build-cuda"} <= set(stages)
    assert stages["cuda-base"].startswith("nvidia/cuda:")
    for target in ("cpu", "cuda"):
        body = dockerfile.split(f" AS {target}\n", 1)[1].split("\nFROM ", 1)[0]
        assert "\nUSER pmr\n" in body, target
        assert "HEALTHCHECK" in body and 'ENTRYPOINT ["/app/docker/entrypoint.sh"]' in body
    assert "download.pytorch.org/whl/cu" in dockerfile  # the CUDA build of torch


def test_the_entrypoint_knows_every_command_compose_uses(compose):
    entrypoint = ROOT / "docker" / "entrypoint.sh"
    assert os.access(entrypoint, os.X_OK)
    text = entrypoint.read_text()
    for service in compose["services"].values():
        for command in service.get("command", []):
            if command in ("web", "worker", "migrate", "flower", "beat"):
                assert re.search(rf"^\s+{command}\)", text, re.MULTILINE), command
    result = subprocess.run(["sh", "-n", str(entrypoint)], capture_output=True)
    assert result.returncode == 0, result.stderr


def test_env_example_is_a_valid_configuration():
    env = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, value = line.split("=", 1)
            env[key] = value
    readme = (ROOT / "README.md").read_text()
    for key in env:
        if key not in ("POSTGRES_PASSWORD", "PMR_PORT"):  # compose's, not the app's
            assert f"`{key}`" in readme, f"{key} is not in the README's configuration table"
    env.update({"DATABASE_URL": "postgres://pmr:x@postgres:5432/pmr",
                "CELERY_BROKER_URL": "redis://redis:6379/0"})
    result = subprocess.run([sys.executable, "-c", (
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'pmr.settings'; "
        "django.setup(); from django.conf import settings as s; "
        "print(s.STORAGE_BACKEND, s.LOG_FORMAT, s.ALLOWED_HOSTS)")],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={k: v for k, v in {**os.environ, **env}.items() if k != "SECRET_KEY_FILE"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[:2] == ["local", "json"]


def test_make_run_starts_the_procfile_programs_from_the_venv():
    """honcho runs each Procfile line with /bin/sh: gunicorn and celery must resolve to
    the ones `make` installed in .venv even when .venv is not activated."""
    venv = ROOT / ".venv"
    if Path(sys.prefix).resolve() != venv.resolve():
        pytest.skip("the suite is not running from the project's .venv")
    programs = sorted({line.split(":", 1)[1].split()[0]
                       for line in (ROOT / "Procfile").read_text().splitlines()
                       if line.strip() and not line.startswith("#")})
    assert programs == ["celery", "gunicorn"]
    bare = {**os.environ, "PATH": "/usr/bin:/bin"}
    dry = subprocess.run(["make", "-n", "run"], cwd=ROOT, env=bare, capture_output=True,
                         text=True, check=True).stdout
    start = next(line for line in dry.splitlines() if "honcho" in line)
    prefix = re.match(r"(.*?)\S*honcho\s", start).group(1)  # what the recipe sets up
    lookup = "; ".join(f"command -v {program}" for program in programs)
    found = subprocess.run(["sh", "-c", f"{prefix}sh -c '{lookup}'"], cwd=ROOT, env=bare,
                           capture_output=True, text=True)
    paths = found.stdout.split()
    assert len(paths) == len(programs), found.stdout + found.stderr
    assert all(Path(p).resolve().parent == (venv / "bin").resolve() for p in paths), paths


def test_gunicorn_binds_loopback_and_keeps_its_control_socket_in_its_own_var(tmp_path,
                                                                             monkeypatch,
                                                                             dockerfile):
    import runpy

    for var in ("a", "b"):
        monkeypatch.setenv("PMR_VAR_DIR", str(tmp_path / var))
        monkeypatch.delenv("BIND", raising=False)
        # (set, so that the config's setdefault changes nothing that outlives the test)
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / var / "prometheus"))
        config = runpy.run_path(str(ROOT / "pmr" / "gunicorn.conf.py"))
        port = os.environ.get("PORT", "8000")
        assert config["bind"] == f"127.0.0.1:{port}"
        assert config["control_socket"] == str(tmp_path / var / f"gunicorn-{port}.ctl")
    monkeypatch.setenv("BIND", "0.0.0.0")
    assert runpy.run_path(str(ROOT / "pmr" / "gunicorn.conf.py"))["bind"].startswith("0.0.0.0:")
    # The containers publish the port: they bind every interface.
    assert dockerfile.count("BIND=0.0.0.0") == 2
