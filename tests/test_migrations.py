"""The models and the migrations agree (a model change without its migration fails CI), and
a database made by older migrations upgrades with every row kept: the tables the apps'
split renamed, and the job columns later moved to their one-to-one rows."""

import io

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone


@pytest.mark.django_db
def test_no_model_change_is_missing_a_migration():
    out = io.StringIO()
    call_command("makemigrations", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()


# The last migrations before the models moved from the detection app to jobs and review.
BEFORE_THE_MOVE = [("detection", "0005_job_base_url"), ("videos", "0002_part_progress"),
                   ("jobs", None), ("review", None)]


def _migrate(targets) -> None:
    executor = MigrationExecutor(connection)
    executor.migrate(targets)


@pytest.mark.django_db(transaction=True)
def test_a_database_made_before_the_apps_split_upgrades_and_keeps_every_row():
    from django.contrib.auth.models import Permission
    from django.contrib.contenttypes.models import ContentType

    from jobs.models import Detection, Job, Video, Webhook, WorkerHeartbeat
    from review.models import AddedBox, ReviewEvent, ReviewMark

    latest = MigrationExecutor(connection).loader.graph.leaf_nodes()
    try:
        _migrate(BEFORE_THE_MOVE)
        applied = MigrationExecutor(connection).loader.applied_migrations
        old = MigrationExecutor(connection).loader.project_state(list(applied)).apps
        with connection.cursor() as cursor:
            tables = set(connection.introspection.table_names(cursor))
        assert {"detection_job", "detection_detection", "detection_addedbox"} <= tables
        assert "jobs_job" not in tables
        user = old.get_model("auth", "User").objects.create(username="reviewer")
        job_type = old.get_model("contenttypes", "ContentType").objects.get(
            app_label="detection", model="job")  # the admin's history points at it
        now = timezone.now()
        OldJob = old.get_model("detection", "Job")
        video = OldJob.objects.create(kind="video", owner=user, status="succeeded",
                                      model_name="yolov3-tiny", fps=25, frame_count=50,
                                      codec="avc1", lease_expires=now, frames_total=50,
                                      frames_done=50, processing_ms=2000.0,
                                      duration_ms=2000, annotated_file="annotated/a.mp4",
                                      callback_url="https://hooks.example.com/pmr",
                                      base_url="https://pmr.example.com/",
                                      webhook_log=[{"attempt": 1, "status_code": 200}])
        rerun = OldJob.objects.create(kind="video", owner=user, status="queued",
                                      model_name="yolov3-tiny", parent=video)
        image = OldJob.objects.create(kind="image", owner=user, status="succeeded",
                                      model_name="yolov3-tiny", width=768, height=576,
                                      reviewed_at=now, reviewed_by=user)
        OldDetection = old.get_model("detection", "Detection")
        boxes = [OldDetection.objects.create(job=video, frame_index=i, timestamp_ms=40 * i,
                                             class_id=0, label="person", confidence=0.5,
                                             x1=1, y1=2, x2=3, y2=4) for i in range(3)]
        OldDetection.objects.create(job=image, class_id=16, label="dog", confidence=0.9,
                                    x1=10, y1=20, x2=30, y2=40, review_status="confirmed",
                                    reviewed_by=user, reviewed_at=now)
        added = old.get_model("detection", "AddedBox").objects.create(
            job=image, class_id=2, label="car", x1=0, y1=0, x2=5, y2=5, created_by=user)
        old.get_model("detection", "ReviewEvent").objects.create(
            job=image, detection=boxes[0], action="confirm", user=user)
        old.get_model("detection", "ReviewEvent").objects.create(
            job=image, added_box=added, action="add_box", user=user)
        old.get_model("videos", "VideoPart").objects.create(
            job=video, index=0, start_frame=0, next_frame=50, status="done", lease_expires=now)
        old.get_model("detection", "WorkerHeartbeat").objects.create(
            hostname="worker@a", pid=1, device="cpu", model_name="yolov3-tiny",
            precision="fp32", started_at=now, last_seen=now)
    finally:
        _migrate(latest)  # whatever happened: the database the other tests expect
    ContentType.objects.clear_cache()

    with connection.cursor() as cursor:
        tables = set(connection.introspection.table_names(cursor))
    assert {"jobs_job", "jobs_detection", "jobs_workerheartbeat", "review_addedbox",
            "review_reviewevent", "videos_videopart"} <= tables
    assert not {t for t in tables if t.startswith("detection_")}
    assert Job.objects.count() == 3 and Detection.objects.count() == 4
    moved = Job.objects.get(pk=video.pk)
    assert (moved.kind, moved.video.codec, moved.video.frame_count, moved.owner.username) == (
        "video", "avc1", 50, "reviewer")
    assert (moved.video.fps, moved.video.frames_total, moved.video.frames_done,
            moved.video.processing_ms, moved.video.duration_ms,
            moved.video.annotated_file.name) == (25, 50, 50, 2000.0, 2000, "annotated/a.mp4")
    assert (moved.webhook.url, moved.webhook.base_url, moved.webhook.log) == (
        "https://hooks.example.com/pmr", "https://pmr.example.com/",
        [{"attempt": 1, "status_code": 200}])
    assert Job.objects.get(pk=rerun.pk).parent == moved
    # One Video row per video job, a Webhook only where there was a callback, a ReviewMark
    # only for the job marked reviewed.
    assert sorted(Video.objects.values_list("job_id", flat=True)) == sorted([video.pk, rerun.pk])
    assert Video.objects.get(job_id=rerun.pk).frames_done == 0
    assert list(Webhook.objects.values_list("job_id", flat=True)) == [video.pk]
    mark = ReviewMark.objects.get()
    assert (mark.job_id, mark.reviewed_at, mark.reviewed_by.username) == (
        image.pk, now, "reviewer")
    assert list(moved.detections.values_list("frame_index", flat=True)) == [0, 1, 2]
    assert moved.parts.get().next_frame == 50
    dog = Detection.objects.get(job_id=image.pk)
    assert (dog.label, dog.review_status, dog.reviewed_by.username) == (
        "dog", "confirmed", "reviewer")
    assert AddedBox.objects.get().job_id == image.pk
    assert sorted(ReviewEvent.objects.values_list("action", flat=True)) == [
        "add_box", "confirm"]
    assert ReviewEvent.objects.get(action="confirm").detection_id == boxes[0].pk
    assert WorkerHeartbeat.objects.get().hostname == "worker@a"
    # The same content type, renamed: the admin's history and permissions follow it.
    assert ContentType.objects.get_for_model(Job).pk == job_type.pk
    assert Permission.objects.filter(content_type_id=job_type.pk, codename="change_job").exists()
    # New rows go on where the old ones stopped (the sequences came along).
    assert Detection.objects.create(job=moved, class_id=0, label="person", confidence=0.4,
                                    x1=0, y1=0, x2=1, y2=1).pk > max(b.pk for b in boxes)
    # Tracking came later: every detection kept, none in a track, no video tracked.
    assert not Detection.objects.filter(track_id__isnull=False).exists()
    assert Video.objects.get(job_id=video.pk).tracks is None and not moved.tracks.exists()
