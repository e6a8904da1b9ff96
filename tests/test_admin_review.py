"""The review dashboard: review changes, exports, re-runs, and pages that stay fast."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from django.urls import reverse
from pycocotools.coco import COCO

from jobs.models import Detection, Job
from review.models import AddedBox, ReviewEvent
from tests.factories import DetectionFactory, JobFactory, UserFactory, image_job_with_detections

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def reviewer(db):
    user = UserFactory(username="reviewer", is_staff=True, is_superuser=True)
    user.set_password("review-pass-123")
    user.save()
    return user


@pytest.fixture
def admin_client(client, reviewer):
    client.force_login(reviewer)
    return client


@pytest.fixture
def dog_job(darknet_dir, tiny_paths):
    """An image job on dog.jpg with the detector's own detections (fp32)."""
    return image_job_with_detections(darknet_dir / "dog.jpg", tiny_paths, "test")


def post_review(client, job, *, action, as_json=False, **data):
    """POST one review change to its endpoint, as the job page's forms do (or as its
    script does, with ``as_json=True``)."""
    if action in ("confirm", "reject", "relabel", "reset"):
        args = [job.pk, data.pop("detection")]
    elif action == "remove_box":
        args = [job.pk, data.pop("box")]
    else:
        args = [job.pk]
    headers = {"Accept": "application/json"} if as_json else {}
    return client.post(reverse(f"admin:jobs_job_{action}", args=args), data, headers=headers)


def page_json(response, element_id: str) -> dict:
    """What the page hands its script (a json_script element)."""
    html = response.content.decode()
    start = html.index(f'<script id="{element_id}" type="application/json">')
    start = html.index(">", start) + 1
    return json.loads(html[start:html.index("</script>", start)])


def originals(job):
    return list(Detection.objects.filter(job=job).order_by("id").values_list(
        "class_id", "label", "confidence", "x1", "y1", "x2", "y2"))


def test_review_changes_sit_beside_the_model_output_with_who_and_when(admin_client, dog_job,
                                                                      reviewer):
    before = originals(dog_job)
    first, second, third = Detection.objects.filter(job=dog_job).order_by("-confidence")[:3]
    response = post_review(admin_client, dog_job, action="confirm", detection=first.pk)
    assert response.status_code == 302
    post_review(admin_client, dog_job, action="reject", detection=second.pk)
    post_review(admin_client, dog_job, action="relabel", detection=third.pk, label="bus")
    assert originals(dog_job) == before  # the model's detections are untouched
    first.refresh_from_db()
    third.refresh_from_db()
    assert first.review_status == "confirmed" and first.reviewed_by == reviewer
    assert first.reviewed_at is not None
    assert (third.review_status, third.review_label, third.review_class_id) == (
        "relabelled", "bus", 5)
    events = list(ReviewEvent.objects.filter(job=dog_job).order_by("id"))
    assert [e.action for e in events] == ["confirm", "reject", "relabel"]
    assert all(e.user == reviewer and e.created_at for e in events)
    assert events[2].details["after"]["label"] == "bus"


def test_a_missed_box_can_be_added_and_removed(admin_client, dog_job, reviewer):
    post_review(admin_client, dog_job, action="add_box", label="potted plant", x1="700",
                y1="400", x2="650", y2="300")  # an unknown label is refused
    assert not AddedBox.objects.exists()
    post_review(admin_client, dog_job, action="add_box", label="pottedplant", x1="700",
                y1="400", x2="650", y2="300")
    box = AddedBox.objects.get()
    assert (box.x1, box.y1, box.x2, box.y2) == (650, 300, 700, 400)  # normalised
    assert box.created_by == reviewer
    post_review(admin_client, dog_job, action="remove_box", box=box.pk)
    box.refresh_from_db()
    assert box.removed_at is not None  # kept, as history
    assert [e.action for e in ReviewEvent.objects.order_by("id")] == ["add_box", "remove_box"]


def test_a_script_gets_each_change_back_as_json_and_bad_fields_as_a_400(admin_client,
                                                                       dog_job, reviewer):
    first = Detection.objects.filter(job=dog_job).order_by("-confidence").first()
    response = post_review(admin_client, dog_job, action="relabel", detection=first.pk,
                           label="bus", as_json=True)
    assert response.status_code == 200, response.content
    answer = response.json()
    assert (answer["id"], answer["label"], answer["review_status"], answer["review_label"],
            answer["reviewed_by"]) == (first.pk, first.label, "relabelled", "bus", "reviewer")
    refused = post_review(admin_client, dog_job, action="relabel", detection=first.pk,
                          label="unicorn", as_json=True)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "invalid_parameters"
    assert "unicorn" in refused.json()["error"]["message"]
    first.refresh_from_db()
    assert first.review_label == "bus"  # the refused change left it as it was

    bad = post_review(admin_client, dog_job, action="add_box", label="cat", x1="left",
                      y1="1", x2="50", y2="60", as_json=True)
    assert bad.status_code == 400 and "x1" in bad.json()["error"]["details"]
    added = post_review(admin_client, dog_job, action="add_box", label="cat", x1="5", y1="6",
                        x2="50", y2="60", as_json=True)
    assert added.status_code == 201
    assert added.json()["box"] == [5.0, 6.0, 50.0, 60.0]
    assert AddedBox.objects.get().label == "cat"
    removed = post_review(admin_client, dog_job, action="remove_box", box=added.json()["id"],
                          as_json=True)
    assert removed.json()["removed"] is True
    marked = post_review(admin_client, dog_job, action="mark_reviewed", as_json=True)
    assert marked.status_code == 200 and marked.json()["reviewed_by"] == "reviewer"
    assert [e.action for e in ReviewEvent.objects.order_by("id")] == [
        "relabel", "add_box", "remove_box", "mark_reviewed"]


def test_a_change_needs_a_post_the_change_permission_and_a_detection_of_that_job(
        admin_client, dog_job):
    from django.contrib.auth.models import Permission
    from django.test import Client

    viewer = UserFactory(username="viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_job"))
    client = Client()
    client.force_login(viewer)
    mine = Detection.objects.filter(job=dog_job).first()
    assert client.get(reverse("admin:jobs_job_change", args=[dog_job.pk])).status_code == 200
    assert post_review(client, dog_job, action="confirm", detection=mine.pk).status_code == 404
    other = JobFactory()
    foreign = DetectionFactory(job=other)
    url = reverse("admin:jobs_job_confirm", args=[dog_job.pk, foreign.pk])
    assert admin_client.post(url).status_code == 404
    assert admin_client.get(url).status_code == 405
    assert not ReviewEvent.objects.exists()
    annotate = post_review(admin_client, dog_job, action="annotate", as_json=True)
    assert annotate.status_code == 400
    assert annotate.json()["error"]["code"] == "not_a_video_job"


def unzip(response) -> zipfile.ZipFile:
    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    return zipfile.ZipFile(io.BytesIO(response.content))


def review_some(client, job):
    ranked = list(Detection.objects.filter(job=job).order_by("-confidence"))
    post_review(client, job, action="confirm", detection=ranked[0].pk)
    post_review(client, job, action="confirm", detection=ranked[1].pk)
    post_review(client, job, action="reject", detection=ranked[2].pk)
    post_review(client, job, action="relabel", detection=ranked[3].pk, label="cat")
    post_review(client, job, action="add_box", label="pottedplant", x1="10", y1="20", x2="60",
                y2="90")
    return ranked  # ranked[4:] stay unreviewed


def test_the_coco_export_holds_exactly_the_reviewed_boxes(admin_client, dog_job, tmp_path):
    ranked = review_some(admin_client, dog_job)
    archive = unzip(admin_client.get(reverse("admin:jobs_job_export",
                                             args=[dog_job.pk, "coco"])))
    assert f"images/{dog_job.pk}.jpg" in archive.namelist()
    (tmp_path / "annotations.json").write_bytes(archive.read("annotations.json"))
    coco = COCO(str(tmp_path / "annotations.json"))
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    exported = sorted((names[a["category_id"]], *[round(v) for v in a["bbox"]])
                      for a in coco.loadAnns(coco.getAnnIds()))

    def bbox(d):
        return [round(d.x1), round(d.y1), round(d.x2 - d.x1), round(d.y2 - d.y1)]

    expected = sorted([(ranked[0].label, *bbox(ranked[0])), (ranked[1].label, *bbox(ranked[1])),
                       ("cat", *bbox(ranked[3])), ("pottedplant", 10, 20, 50, 70)])
    assert exported == expected
    image = coco.loadImgs(coco.getImgIds())[0]
    assert (image["width"], image["height"]) == (768, 576)


def test_the_yolo_export_has_normalised_labels(admin_client, dog_job):
    review_some(admin_client, dog_job)
    archive = unzip(admin_client.get(reverse("admin:jobs_job_export",
                                             args=[dog_job.pk, "yolo"])))
    lines = archive.read(f"labels/{dog_job.pk}.txt").decode().splitlines()
    assert len(lines) == 4
    classes = archive.read("classes.txt").decode().splitlines()
    assert classes[58] == "pottedplant"
    added = [line.split() for line in lines if line.startswith("58 ")]
    assert added == [["58", f"{35 / 768:.6f}", f"{55 / 576:.6f}", f"{50 / 768:.6f}",
                      f"{70 / 576:.6f}"]]
    import yaml

    data = yaml.safe_load(archive.read("data.yaml"))  # what a YOLO trainer reads
    assert data["nc"] == len(classes) == 80 and data["names"] == classes
    assert data["train"] == data["val"] == "images"
    assert f"images/{dog_job.pk}.jpg" in archive.namelist()


def test_selected_jobs_export_and_mark_reviewed_from_the_list(admin_client, dog_job, reviewer):
    review_some(admin_client, dog_job)
    url = reverse("admin:jobs_job_changelist")
    response = admin_client.post(url, {"action": "export_coco",
                                       "_selected_action": [dog_job.pk]})
    annotations = json.loads(unzip(response).read("annotations.json"))
    assert len(annotations["annotations"]) == 4
    admin_client.post(url, {"action": "mark_reviewed", "_selected_action": [dog_job.pk]})
    dog_job.refresh_from_db()
    assert dog_job.review_mark.reviewed_by == reviewer
    waiting = admin_client.get(url, {"review": "waiting"})
    assert str(dog_job.pk)[:8] not in waiting.content.decode()


def test_a_rerun_is_a_new_job_linked_to_the_old_one(admin_client, eager_celery, dog_job):
    response = post_review(admin_client, dog_job, action="rerun", model="yolov3-tiny",
                           min_confidence="0.5")
    assert response.status_code == 302
    rerun = Job.objects.get(parent=dog_job)
    assert rerun.status == "succeeded" and rerun.params["min_confidence"] == 0.5
    assert rerun.input_file.name != dog_job.input_file.name  # its own copy
    assert all(d.confidence > 0.5 for d in rerun.detections.all())
    assert ReviewEvent.objects.filter(job=dog_job, action="rerun").exists()


def test_a_rerun_whose_message_is_lost_is_sent_again_by_the_watchdog(admin_client, dog_job,
                                                                     eager_celery):
    from datetime import timedelta

    from images.services import requeue_stalled_images

    eager_celery.conf.task_always_eager = False
    broker = eager_celery.conf.broker_url
    eager_celery.conf.broker_url = "memory://"  # the message goes where no worker listens
    try:
        post_review(admin_client, dog_job, action="rerun", model="yolov3-tiny")
    finally:
        eager_celery.conf.broker_url = broker
        eager_celery.conf.task_always_eager = True
    rerun = Job.objects.get(parent=dog_job)
    assert rerun.status == "queued" and rerun.lease_expires is not None
    assert (rerun.content_type, rerun.width, rerun.height) == (
        dog_job.content_type, dog_job.width, dog_job.height)
    later = rerun.lease_expires + timedelta(seconds=1)
    assert requeue_stalled_images(now=later) == [str(rerun.pk)]  # runs inline, eagerly
    rerun.refresh_from_db()
    assert rerun.status == "succeeded"


def test_the_job_page_hands_its_script_the_boxes_the_media_and_the_endpoints(admin_client,
                                                                            dog_job):
    page = admin_client.get(reverse("admin:jobs_job_change", args=[dog_job.pk]))
    assert page.status_code == 200
    frame = page_json(page, "pmr-frame")
    stored = Detection.objects.filter(job=dog_job).order_by("-confidence", "id")
    assert [d["id"] for d in frame["detections"]] == [d.pk for d in stored]
    assert frame["detections"][0]["box"] == [stored[0].x1, stored[0].y1, stored[0].x2,
                                             stored[0].y2]
    data = page_json(page, "pmr-data")
    assert data["media"]["image"] == reverse("admin:jobs_job_input", args=[dog_job.pk])
    assert (data["job"]["width"], data["job"]["height"], len(data["names"])) == (768, 576, 80)
    assert data["can_change"] is True and data["frames"] == [0]
    again = admin_client.get(reverse("admin:jobs_job_frame_data", args=[dog_job.pk, 0]))
    assert again.json() == frame  # the script's own request gives the same
    image = admin_client.get(reverse("admin:jobs_job_input", args=[dog_job.pk]))
    assert image.status_code == 200 and image["Content-Type"] == "image/jpeg"


def test_the_worker_that_finishes_a_job_makes_its_thumbnail_and_a_page_makes_none(
        admin_client, eager_celery, tiny_paths, darknet_dir, videos_dir, dog_job):
    from django.core.files.storage import default_storage
    from django.core.files.uploadedfile import SimpleUploadedFile
    from PIL import Image
    from rest_framework.test import APIClient

    from jobs.thumbnails import thumbnail_name

    api = APIClient()
    api.force_authenticate(UserFactory())
    image = api.post("/api/detect/image", {"image": SimpleUploadedFile(
        "dog.jpg", (darknet_dir / "dog.jpg").read_bytes())}, format="multipart").json()["id"]
    video = api.post("/api/detect/video", {"video": SimpleUploadedFile(
        "c.mp4", (videos_dir / "intel_people-detection_from_gif.mp4").read_bytes())},
        format="multipart").json()["id"]
    for job_id, size in ((image, (192, 144)), (video, (192, 108))):  # 768x576, 480x270
        job = Job.objects.get(pk=job_id)
        assert job.status == "succeeded" and default_storage.exists(thumbnail_name(job))
        served = admin_client.get(reverse("admin:jobs_job_thumbnail", args=[job_id]))
        assert served.status_code == 200 and served["Content-Type"] == "image/jpeg"
        assert Image.open(io.BytesIO(b"".join(served.streaming_content))).size == size
    # A job no worker finished (made here by a factory) has none, and a GET makes none.
    missing = admin_client.get(reverse("admin:jobs_job_thumbnail", args=[dog_job.pk]))
    assert missing.status_code == 404
    assert not default_storage.exists(thumbnail_name(dog_job))


def test_media_is_served_in_byte_ranges_so_that_a_video_can_be_seeked(admin_client, dog_job):
    url = reverse("admin:jobs_job_input", args=[dog_job.pk])
    whole = b"".join(admin_client.get(url).streaming_content)
    size = len(whole)
    part = admin_client.get(url, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part["Content-Range"] == f"bytes 100-199/{size}"
    assert b"".join(part.streaming_content) == whole[100:200]
    tail = admin_client.get(url, headers={"Range": "bytes=-50"})
    assert b"".join(tail.streaming_content) == whole[-50:]
    rest = admin_client.get(url, headers={"Range": f"bytes={size - 10}-"})
    assert b"".join(rest.streaming_content) == whole[-10:] and rest["Content-Length"] == "10"
    beyond = admin_client.get(url, headers={"Range": f"bytes={size}-"})
    assert beyond.status_code == 416 and beyond["Content-Range"] == f"bytes */{size}"


def test_media_is_for_staff_only(client, dog_job):
    response = client.get(reverse("admin:jobs_job_input", args=[dog_job.pk]))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


@pytest.fixture
def busy_database(reviewer):
    """100,000 detection records: one long video job and 60 image jobs."""
    owner = UserFactory()
    video = JobFactory(kind="video", owner=owner, fps=25.0, frame_count=10_000,
                       duration_ms=400_000, frames_total=10_000, frames_done=10_000,
                       width=640, height=480)
    labels = [(0, "person"), (2, "car"), (16, "dog"), (7, "truck")]
    rows = [Detection(job=video, frame_index=i // 10, timestamp_ms=(i // 10) * 40,
                      class_id=labels[i % 4][0], label=labels[i % 4][1],
                      confidence=0.3 + (i % 70) / 100, x1=1, y1=2, x2=30, y2=40)
            for i in range(94_000)]
    images = JobFactory.create_batch(60, owner=owner)
    for job in images:
        rows += [Detection(job=job, class_id=c, label=n, confidence=0.5, x1=1, y1=1, x2=9, y2=9)
                 for c, n in labels * 25]
    Detection.objects.bulk_create(rows, batch_size=10_000)
    assert Detection.objects.count() == 100_000
    return video, images


def count_queries(client, url, django_assert_max_num_queries, limit):
    with django_assert_max_num_queries(limit) as captured:
        response = client.get(url)
    assert response.status_code == 200
    return len(captured.captured_queries)


@pytest.mark.slow
def test_pages_cost_a_fixed_number_of_queries_with_100k_detections(
        admin_client, busy_database, django_assert_max_num_queries):
    video, images = busy_database
    changelist = reverse("admin:jobs_job_changelist")
    admin_client.get(changelist)  # the first page registers the built-in model, once
    few = count_queries(admin_client, f"{changelist}?o=-7&kind__exact=video",
                        django_assert_max_num_queries, 20)
    many = count_queries(admin_client, changelist, django_assert_max_num_queries, 20)
    assert many == few  # 61 jobs on the page cost what 1 does: no query per row
    video_page = reverse("admin:jobs_job_change", args=[video.pk])
    count_queries(admin_client, video_page, django_assert_max_num_queries, 20)
    count_queries(admin_client, f"{video_page}?frame=5000", django_assert_max_num_queries, 20)
    count_queries(admin_client, reverse("admin:jobs_job_change", args=[images[0].pk]),
                  django_assert_max_num_queries, 20)
    count_queries(admin_client, reverse("admin:jobs_job_overview"),
                  django_assert_max_num_queries, 20)
    # What the page's script asks for as the reviewer works.
    for name, args, query in (("jobs_job_data", [video.pk], ""),
                              ("jobs_job_frame_data", [video.pk, 5000], ""),
                              ("jobs_job_boxes", [video.pk], "?from=4000&to=4250"),
                              ("jobs_job_review_history", [video.pk], ""),
                              ("jobs_job_data", [images[0].pk], "")):
        count_queries(admin_client, reverse(f"admin:{name}", args=args) + query,
                      django_assert_max_num_queries, 12)


def test_the_video_page_has_a_timeline_and_shows_the_chosen_frame(admin_client, busy_database):
    video, _ = busy_database
    page = admin_client.get(reverse("admin:jobs_job_change", args=[video.pk]),
                            {"frame": 1234})
    assert 'id="pmr-timeline"' in page.content.decode()
    data = page_json(page, "pmr-data")
    lanes = {lane["label"]: lane for lane in data["lanes"]}
    assert set(lanes) == {"person", "car", "dog", "truck"}
    # Every 40 ms frame has each label: one segment per label, over the whole video.
    assert all(lane["segments"] == [[0, 375_960, 9_400]] for lane in lanes.values())
    assert lanes["person"]["count"] == 23_500 and lanes["car"]["class_id"] == 2
    assert data["frames"] == list(range(9_400)) and data["job"]["frame_interval_ms"] == 40
    frame = page_json(page, "pmr-frame")
    assert frame["frame"] == 1234 and len(frame["detections"]) == 10  # that frame's only
    assert {d["frame_index"] for d in frame["detections"]} == {1234}
    boxes = admin_client.get(reverse("admin:jobs_job_boxes", args=[video.pk]),
                             {"from": 100, "to": 200}).json()
    assert (boxes["from"], boxes["to"], len(boxes["detections"])) == (100, 200, 1000)
    cut = admin_client.get(reverse("admin:jobs_job_boxes", args=[video.pk]),
                           {"from": 0, "to": 9400}).json()
    assert cut["to"] == 500 and len(cut["detections"]) == 5000  # whole frames only


def test_the_overview_sums_up_the_service(admin_client, dog_job):
    page = admin_client.get(reverse("admin:jobs_job_overview")).content.decode()
    assert 'id="pmr-jobs-chart"' in page and "No worker online." in page
    assert page.count("<svg") >= 6  # the charts, drawn on the server
    assert "Review progress: 0 of 1 succeeded jobs reviewed" in page
    assert "1 succeeded job(s) not yet reviewed" in page


def test_the_overview_counts_messages_waiting_in_the_broker(admin_client, settings, tmp_path):
    from kombu import Connection

    settings.CELERY_BROKER_URL = "filesystem://"
    settings.BROKER_DIR = tmp_path
    settings.IMAGE_QUEUE, settings.VIDEO_QUEUE = "ov-images", "ov-videos"
    options = {"data_folder_in": str(tmp_path), "data_folder_out": str(tmp_path),
               "control_folder": str(tmp_path / "control")}
    with Connection("filesystem://", transport="pmr.broker:FilesystemTransport",
                    transport_options=options) as connection:
        queue = connection.SimpleQueue("ov-images")
        for n in range(3):
            queue.put({"n": n})
        queue.close()
    page = admin_client.get(reverse("admin:jobs_job_overview")).content.decode()
    assert "Messages waiting in the broker: ov-images 3, ov-videos 0." in page


def test_a_video_without_an_annotated_video_can_ask_for_one(admin_client, eager_celery,
                                                            tiny_paths, videos_dir):
    from rest_framework.test import APIClient

    api = APIClient()
    api.force_authenticate(UserFactory())
    clip = (videos_dir / "intel_people-detection_from_gif.mp4").read_bytes()
    from django.core.files.uploadedfile import SimpleUploadedFile

    job_id = api.post("/api/detect/video", {"video": SimpleUploadedFile("c.mp4", clip)},
                      format="multipart").json()["id"]
    page = admin_client.get(reverse("admin:jobs_job_change", args=[job_id]))
    annotate = reverse("admin:jobs_job_annotate", args=[job_id]).encode()
    annotated = reverse("admin:jobs_job_annotated", args=[job_id]).encode()
    assert annotate in page.content and annotated not in page.content
    post_review(admin_client, Job.objects.get(pk=job_id), action="annotate", frame_index="0")
    page = admin_client.get(reverse("admin:jobs_job_change", args=[job_id]))
    assert annotated in page.content  # rendered (inline here), and now linked from the page
    video = admin_client.get(reverse("admin:jobs_job_annotated", args=[job_id]))
    assert video.status_code == 200 and video["Content-Type"] == "video/mp4"


def test_undo_puts_a_detection_back_unreviewed_and_the_history_keeps_both(admin_client,
                                                                          dog_job):
    detection = Detection.objects.filter(job=dog_job).order_by("-confidence").first()
    post_review(admin_client, dog_job, action="relabel", detection=detection.pk, label="bus")
    page = admin_client.get(reverse("admin:jobs_job_change", args=[dog_job.pk]))
    [shown] = [d for d in page_json(page, "pmr-frame")["detections"] if d["id"] == detection.pk]
    assert (shown["review_status"], shown["review_label"]) == ("relabelled", "bus")
    post_review(admin_client, dog_job, action="reset", detection=detection.pk)
    detection.refresh_from_db()
    assert (detection.review_status, detection.review_label, detection.reviewed_by) == (
        "unreviewed", "", None)
    assert [e.action for e in ReviewEvent.objects.filter(job=dog_job).order_by("id")] == [
        "relabel", "reset"]
    history = admin_client.get(reverse("admin:jobs_job_change", args=[dog_job.pk]))
    text = history.content.decode()
    section = text[text.index('id="pmr-history"'):]
    assert "relabel" in section and "reset" in section and "→ bus" in section
    [shown] = [d for d in page_json(history, "pmr-frame")["detections"]
               if d["id"] == detection.pk]
    assert (shown["review_status"], shown["review_label"]) == ("unreviewed", None)


def test_the_job_list_filters_and_searches(admin_client, reviewer):
    from datetime import timedelta

    from django.utils import timezone

    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    garden = JobFactory(owner=alice, original_filename="garden.jpg")
    DetectionFactory(job=garden, label="dog")
    failed_video = JobFactory(owner=bob, kind="video", status="failed")
    reviewed = JobFactory(owner=alice, reviewed_at=timezone.now())
    started = JobFactory(owner=bob)
    ReviewEvent.objects.create(job=started, action="confirm", user=reviewer, details={})
    old = JobFactory(owner=bob)
    Job.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=30))

    def listed(**query) -> set:
        response = admin_client.get(reverse("admin:jobs_job_changelist"), query)
        assert response.status_code == 200
        return {job.pk for job in response.context["cl"].result_list}

    assert listed(status__exact="failed") == {failed_video.pk}
    assert listed(kind__exact="video") == {failed_video.pk}
    assert listed(label="dog") == {garden.pk}
    assert listed(review="reviewed") == {reviewed.pk}
    assert listed(review="started") == {started.pk}
    assert listed(review="waiting") == {garden.pk, started.pk, old.pk}
    week_ago = (timezone.now() - timedelta(days=7)).date().isoformat()
    assert old.pk not in listed(created_at__gte=week_ago) and garden.pk in listed(
        created_at__gte=week_ago)
    assert listed(q="garden") == {garden.pk}
    assert listed(q="alice") == {garden.pk, reviewed.pk}
    assert listed(q=str(failed_video.pk)) == {failed_video.pk}
