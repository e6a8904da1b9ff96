"""The image API end to end: real gunicorn, a real Celery worker, real images, HTTP."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from tests.conftest import files_under


def test_readyz_reports_the_database_broker_and_worker_in_use(service):
    body = service.get("/readyz").json()
    assert body["status"] == "ready"
    assert body["checks"]["database"]["vendor"] == service.backends["database"]
    assert body["checks"]["broker"]["transport"] == service.backends["broker"]
    worker = body["checks"]["workers"]["workers"][0]
    assert worker["device"] == "cpu" and worker["model"] == "yolov3-tiny"
    if os.environ.get("REDIS_URL") and os.environ.get("DATABASE_URL", "").startswith("postgres"):
        assert service.backends == {"database": "postgresql", "broker": "redis"}


def test_dog_gives_the_same_detections_as_manage_py_detect(service, darknet_dir):
    response = service.post_image(darknet_dir / "dog.jpg", name="dog.jpg")
    assert response.status_code == 201, response.text
    body = response.json()
    labels = {d["label"] for d in body["detections"]}
    assert {"dog", "bicycle"} <= labels and labels & {"car", "truck"}

    printed = service.manage("detect", str(darknet_dir / "dog.jpg")).stdout
    assert body["detections"] == json.loads(printed)["detections"]


def test_a_stored_job_is_served_later_to_its_owner_only(service, darknet_dir):
    created = service.post_image(darknet_dir / "eagle.jpg").json()
    again = service.get(f"/api/jobs/{created['id']}")
    assert again.status_code == 200 and again.json() == created
    listed = service.get("/api/jobs", params={"kind": "image", "status": "succeeded"}).json()
    assert created["id"] in [job["id"] for job in listed["results"]]
    other = service.manage("create_api_token", "someone-else").stdout.strip()
    assert service.get(f"/api/jobs/{created['id']}", token=other).status_code == 404


def test_concurrent_requests_are_micro_batched(service, darknet_dir):
    names = ["dog.jpg", "eagle.jpg", "giraffe.jpg", "horses.jpg", "kite.jpg", "person.jpg"] * 2
    with ThreadPoolExecutor(len(names)) as pool:
        responses = list(pool.map(lambda n: service.post_image(darknet_dir / n, name=n), names))
    assert [r.status_code for r in responses] == [201] * len(names)
    batch_sizes = [r.json()["timing"]["batch_size"] for r in responses]
    assert max(batch_sizes) > 1, batch_sizes
    assert all(r.json()["detections"] for r in responses)


def test_a_truncated_image_is_refused_and_leaves_nothing(service, darknet_dir):
    media = service.workdir / "media"
    before = files_under(media)
    count_before = service.get("/api/jobs").json()["count"]
    data = (darknet_dir / "kite.jpg").read_bytes()
    response = service.post_image(data[: len(data) // 3], name="kite.jpg")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "corrupt_image"
    assert files_under(media) == before
    assert service.get("/api/jobs").json()["count"] == count_before


def test_when_the_wait_runs_out_the_answer_is_202_and_the_job_finishes(service, darknet_dir):
    impatient = service.start_web("web-impatient", env={"DETECT_WAIT_SECONDS": "0"})
    response = service.post_image(darknet_dir / "person.jpg", url=impatient)
    assert response.status_code == 202
    status_url = response.headers["Location"]
    assert response.json()["status_url"] == status_url
    for _ in range(240):
        job = service.get(status_url).json()
        if job["status"] == "succeeded":
            break
        requests.get(f"{impatient}/healthz", timeout=5)
    assert job["status"] == "succeeded"
    assert {"person", "horse", "dog"} <= {d["label"] for d in job["detections"]}
    service.stop("web-impatient")


def _loads_torch(pid: int) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text(encoding="ascii", errors="replace")


def test_the_web_processes_never_load_pytorch_the_worker_does(service, darknet_dir,
                                                              videos_dir):
    import psutil

    # Every kind of request the web tier serves: images (waited for), videos, the job's
    # pages, the admin's overview, the schema.
    assert service.post_image(darknet_dir / "dog.jpg").status_code == 201
    video = service.post_video(videos_dir / "intel_people-detection_from_gif.mp4")
    assert video.status_code == 202, video.text
    job = service.wait_job(video.headers["Location"])
    for path in (job["detections_url"], job["segments_url"], "/api/schema/", "/readyz",
                 "/metrics"):
        assert service.get(path).status_code == 200, path
    master = psutil.Process(service.processes["web"].pid)
    workers = master.children()
    assert workers, "gunicorn has no worker processes"
    assert not [p.pid for p in [master, *workers] if _loads_torch(p.pid)]
    assert _loads_torch(service.processes["worker1"].pid)


def test_metrics_add_up_every_web_process(service):
    import re

    import psutil

    web_workers = {p.pid for p in psutil.Process(service.processes["web"].pid).children()}
    assert len(web_workers) == 2  # WEB_CONCURRENCY
    port = service.base_url.rsplit(":", 1)[1]
    samples = service.workdir / "var" / f"prometheus-{port}"
    # A second server of the same instance (same var/) starting meanwhile keeps its own
    # samples: it must not clear this one's.
    service.start_web("web-second")

    def processes_that_counted() -> set[int]:
        return {int(m[1]) for f in samples.glob("counter_*.db")
                if (m := re.fullmatch(r"counter_(\d+)\.db", f.name))}

    def healthz_served() -> float:
        text = service.get("/metrics").text
        return sum(float(v) for v in re.findall(
            r'^pmr_http_requests_total\{method="GET",route="healthz",status="200"\} (\S+)$',
            text, re.M))

    before, sent = healthz_served(), 0
    with ThreadPoolExecutor(8) as pool:  # a new connection each: gunicorn's workers share them
        while not web_workers <= processes_that_counted() and sent < 4000:
            codes = list(pool.map(lambda _: service.get("/healthz").status_code, range(8)))
            assert codes == [200] * 8
            sent += 8
    assert web_workers <= processes_that_counted(), "one web process served every request"
    # Whichever process answers /metrics, it counts the requests every process served.
    assert [healthz_served() - before for _ in range(4)] == [sent] * 4
