"""Running PMR for real: gunicorn and Celery workers as subprocesses, over HTTP.

Against the Redis and PostgreSQL named by REDIS_URL / DATABASE_URL when they are set
(CI sets both), else against the embedded defaults (filesystem broker, SQLite). Each
run gets its own database, queues and media folder, so runs never see each other.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
import requests
from django.conf import settings

ROOT = Path(settings.BASE_DIR)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@dataclass
class _Template:
    """A database migrated once per test session, with the user "integration" and its
    token, that each Service's own database is copied from (a SQLite file copied; a
    PostgreSQL database created with it as TEMPLATE): no stack pays for migrating."""

    database: str  # the SQLite file, or the PostgreSQL database's name
    token: str

    _made: ClassVar[dict[str, _Template]] = {}

    @classmethod
    def for_url(cls, database_url: str, env: dict) -> _Template:
        if database_url not in cls._made:
            cls._made[database_url] = cls._make(database_url, env)
        return cls._made[database_url]

    @classmethod
    def _make(cls, database_url: str, env: dict) -> _Template:
        name = f"pmr_it_template_{uuid.uuid4().hex[:10]}"
        if database_url.startswith(("postgres://", "postgresql://")):
            admin = _with_database(database_url, "postgres")
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            atexit.register(_drop_database, admin, name)
            url, database = _with_database(database_url, name), name
        else:
            folder = Path(tempfile.mkdtemp(prefix="pmr-it-template-"))
            atexit.register(shutil.rmtree, folder, True)
            database = str(folder / "db.sqlite3")
            url = f"sqlite:///{database}"
        # One process: migrate, then make the token (each manage.py start costs seconds).
        script = ("from django.core.management import call_command; "
                  "call_command('migrate', interactive=False, verbosity=0); "
                  "call_command('create_api_token', 'integration')")
        result = subprocess.run([sys.executable, "manage.py", "shell", "-c", script], cwd=ROOT,
                                env={**env, "DATABASE_URL": url}, capture_output=True,
                                text=True, timeout=600)
        if result.returncode != 0:
            raise RuntimeError(f"migrating the template database failed:\n{result.stderr}")
        return cls(database=database, token=result.stdout.strip().splitlines()[-1])


def _drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Service:
    workdir: Path
    env: dict
    backends: dict
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    base_url: str = ""
    token: str = ""
    _pg_admin_url: str | None = None
    _pg_database: str | None = None

    @classmethod
    def create(cls, workdir: Path, **overrides: str) -> Service:
        run_id = uuid.uuid4().hex[:10]
        workdir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "DJANGO_SETTINGS_MODULE": "pmr.settings",
               "PMR_VAR_DIR": str(workdir / "var"), "MEDIA_ROOT": str(workdir / "media"),
               "SECRET_KEY": f"integration-{run_id}", "PMR_QUEUE_PREFIX": f"it{run_id}-",
               "WORKER_HEARTBEAT_SECONDS": "1", "WORKER_STALE_SECONDS": "4",
               "VIDEO_LEASE_SECONDS": "4", "WATCHDOG_SECONDS": "1",
               "WEBHOOK_BACKOFF_SECONDS": "1", "WEBHOOK_ALLOW_PRIVATE": "true",
               # Tests poll jobs from several threads at once; the per-user rate limit's
               # own tests set it low themselves.
               "THROTTLE_USER_RATE": "100000/minute",
               "WEB_CONCURRENCY": "2", "WEB_THREADS": "16", "GUNICORN_ACCESS_LOG": ""}
        service = cls(workdir=workdir, env=env, backends={})
        database_url = os.environ.get("DATABASE_URL", "")
        redis_url = os.environ.get("REDIS_URL", "")
        env["CELERY_BROKER_URL"] = redis_url or "filesystem://"
        env.pop("NOTIFY_REDIS_URL", None)
        service.backends["broker"] = "redis" if redis_url else "filesystem"
        env.update(overrides)
        template = _Template.for_url(database_url, env)
        if database_url.startswith(("postgres://", "postgresql://")):
            service._pg_admin_url = _with_database(database_url, "postgres")
            service._pg_database = f"pmr_it_{run_id}"
            with psycopg.connect(service._pg_admin_url, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{service._pg_database}" '
                             f'TEMPLATE "{template.database}"')
            env["DATABASE_URL"] = _with_database(database_url, service._pg_database)
            service.backends["database"] = "postgresql"
        else:
            shutil.copyfile(template.database, workdir / "db.sqlite3")
            env["DATABASE_URL"] = f"sqlite:///{workdir / 'db.sqlite3'}"
            service.backends["database"] = "sqlite"
        service.token = template.token
        return service

    @classmethod
    @contextmanager
    def running(cls, workdir: Path, **overrides: str) -> Iterator[Service]:
        """gunicorn + one Celery worker, ready; everything stopped and dropped after."""
        service = cls.create(workdir, **overrides)
        try:
            service.start_worker()
            service.start_web()
            service.wait_ready()
            yield service
        finally:
            service.close()

    def manage(self, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT,
                                env={**self.env, **(env or {})}, capture_output=True, text=True,
                                timeout=600)
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stderr}")
        return result

    def _spawn(self, name: str, command: list[str], env: dict | None = None) -> None:
        log = (self.workdir / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(command, cwd=ROOT, env={**self.env, **(env or {})},
                                                stdout=log, stderr=subprocess.STDOUT,
                                                start_new_session=True)

    def start_worker(self, name: str = "worker1", concurrency: int = 8,
                     env: dict | None = None, queues: str = "images,videos") -> None:
        prefix = self.env["PMR_QUEUE_PREFIX"]
        names = ",".join(f"{prefix}{queue}" for queue in queues.split(","))
        self._spawn(name, [sys.executable, "-m", "celery", "--app", "pmr", "worker",
                           "--loglevel", "INFO", "--queues", names,
                           "--hostname", f"{name}-{prefix}@%h", "--concurrency",
                           str(concurrency)], env)

    def start_beat(self, env: dict | None = None) -> None:
        self._spawn("beat", [sys.executable, "-m", "celery", "--app", "pmr", "beat",
                             "--loglevel", "INFO", "--schedule",
                             str(self.workdir / "beat-schedule")], env)

    def start_web(self, name: str = "web", env: dict | None = None) -> str:
        port = free_port()
        self._spawn(name, [sys.executable, "-m", "gunicorn", "pmr.wsgi:application",
                           "--config", "pmr/gunicorn.conf.py"], {"PORT": str(port), **(env or {})})
        url = f"http://127.0.0.1:{port}"
        self._wait(lambda: requests.get(f"{url}/healthz", timeout=2).status_code == 200, name)
        if name == "web":
            self.base_url = url
        return url

    def wait_ready(self, timeout: float = 120) -> None:
        self._wait(lambda: requests.get(f"{self.base_url}/readyz", timeout=5).status_code == 200,
                   "readiness", timeout)

    def _wait(self, probe, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if probe():
                    return
            except requests.RequestException:
                pass
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited ({process.returncode}):\n{self.log(name)}")
            time.sleep(0.25)
        raise TimeoutError(f"{what} not reached in {timeout}s:\n" +
                           "\n".join(f"--- {n}\n{self.log(n)}" for n in self.processes))

    def log(self, name: str, tail: int = 4000) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        process = self.processes.pop(name)
        if process.poll() is None:
            os.killpg(process.pid, sig)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)

    def close(self) -> None:
        for name in list(self.processes):
            self.stop(name)
        if self._pg_database:
            with psycopg.connect(self._pg_admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self._pg_database}" WITH (FORCE)')

    # --- HTTP helpers ---------------------------------------------------------------------
    def headers(self, token: str | None = None) -> dict:
        return {"Authorization": f"Token {token or self.token}"}

    def get(self, path: str, token: str | None = None, **kwargs) -> requests.Response:
        return requests.get(self._url(path), headers=self.headers(token), timeout=60, **kwargs)

    def post_image(self, path: Path | bytes, name: str = "image.jpg", url: str | None = None,
                   **fields) -> requests.Response:
        data = path.read_bytes() if isinstance(path, Path) else path
        return requests.post(f"{url or self.base_url}/api/detect/image",
                             headers=self.headers(), files={"image": (name, data)},
                             data=fields, timeout=120)

    def post_video(self, path: Path | bytes, name: str = "video.mp4",
                   headers: dict | None = None, **fields) -> requests.Response:
        data = path.read_bytes() if isinstance(path, Path) else path
        return requests.post(f"{self.base_url}/api/detect/video",
                             headers={**self.headers(), **(headers or {})},
                             files={"video": (name, data)}, data=fields, timeout=300)

    def wait_job(self, url: str, timeout: float = 300, until=None,
                 token: str | None = None) -> dict:
        """Poll a job until it is finished, or until ``until(job)`` holds: then a job that
        failed or was cancelled first is an error at once, not a wait to the timeout (one
        that succeeded may still have its webhook to come). Four polls a second: well
        under the per-user rate limit, even with a few jobs polled at once."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(url, token)
            finished = job["status"] in ("succeeded", "failed", "cancelled")
            if until(job) if until else finished:
                return job
            if until and job["status"] in ("failed", "cancelled"):
                raise AssertionError(f"job {url} ended {job['status']} ({job.get('error')}) "
                                     "before the state awaited:\n" + self.logs())
            time.sleep(0.25)
        raise TimeoutError(f"job {url} still {job['status']} after {timeout}s:\n" + self.logs())

    def job(self, url: str, token: str | None = None) -> dict:
        """A job's JSON (after a 429, once its Retry-After has passed)."""
        while True:
            response = self.get(url, token)
            if response.status_code != 429:
                break
            time.sleep(float(response.headers.get("Retry-After", 1)))
        assert response.status_code == 200, (url, response.status_code, response.text)
        return response.json()

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n{self.log(n)}" for n in self.processes)

    def _url(self, path: str) -> str:
        return path if path.startswith("http") else f"{self.base_url}{path}"
