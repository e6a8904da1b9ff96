"""Models scored on the user's own reviewed data: ``evaluate --reviewed`` and the dashboard's
scores page (a worker's job, with progress), against pycocotools run directly on the COCO
export of the same reviewed set."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.urls import reverse
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from engine import decode_image
from engine.evaluate import PROTOCOL
from jobs.models import Detection, Job
from review import services as review
from review.models import ModelScoring
from tests.custom_model import KEPT, write_three_class_model
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db(transaction=True)

IMAGES = ("dog", "person", "horses", "giraffe", "kite", "eagle")


@pytest.fixture(autouse=True)
def _fp32_torch(settings):
    # The scores are checked against the same models run here: one runtime and precision.
    settings.DETECTOR_RUNTIME = "torch"
    settings.DETECTOR_PRECISION = "fp32"


@pytest.fixture
def reviewer(db):
    return UserFactory(username="scorer", is_staff=True, is_superuser=True)


@pytest.fixture
def reviewed_set(reviewer, eager_celery, tiny_paths, darknet_dir, videos_dir, tmp_path):
    """Six demo images and five frames of a street video run by yolov3-tiny, reviewed as
    a person would: boxes above 0.5 confirmed, the rest rejected, one relabelled, a
    missed box added; all marked reviewed. And the 3-class custom model, registered."""
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(reviewer)
    jobs = []
    for name in IMAGES:
        response = client.post("/api/detect/image", {"image": SimpleUploadedFile(
            f"{name}.jpg", (darknet_dir / f"{name}.jpg").read_bytes())}, format="multipart")
        assert response.status_code == 201, response.content
        jobs.append(Job.objects.get(pk=response.json()["id"]))
    clip = (videos_dir / "intel_person-bicycle-car-detection_from_gif.mp4").read_bytes()
    response = client.post("/api/detect/video", {"video": SimpleUploadedFile("street.mp4", clip),
                                                 "frame_stride": 10}, format="multipart")
    assert response.status_code == 202, response.content
    jobs.append(Job.objects.get(pk=response.json()["id"]))
    assert jobs[-1].status == "succeeded"
    for job in jobs:
        for detection in Detection.objects.filter(job=job):
            action = "confirm" if detection.confidence > 0.5 else "reject"
            review.detection_review(detection=detection, user=reviewer, action=action)
    first = Detection.objects.filter(job=jobs[0], review_status="confirmed").first()
    review.detection_review(detection=first, user=reviewer, action="relabel", label="cat")
    review.box_add(job=jobs[1], user=reviewer, label="person", x1=10, y1=20, x2=60, y2=200)
    for job in jobs:
        review.job_mark_reviewed(job=job, user=reviewer)
    files = write_three_class_model(tiny_paths, tmp_path / "tiny3")
    call_command("add_model", "tiny3", "--cfg", str(files["cfg"]), "--weights",
                 str(files["weights"]), "--names", str(files["names"]), stdout=io.StringIO())
    return jobs


def pycocotools_on_the_export(jobs, detector, tmp_path) -> dict:
    """mAP as a user would get it: the COCO export's annotations.json, the model run on
    the export's own image files, pycocotools called directly."""
    archive = zipfile.ZipFile(io.BytesIO(review.export_dataset(jobs=jobs, fmt="coco")))
    (tmp_path / "gt.json").write_bytes(archive.read("annotations.json"))
    gt = COCO(str(tmp_path / "gt.json"))
    category = {c["name"]: c["id"] for c in gt.dataset["categories"]}
    results = []
    for image in gt.dataset["images"]:
        picture = decode_image(archive.read(f"images/{image['file_name']}"))
        for d in detector.detect([picture], **PROTOCOL)[0]:
            if d.label in category:
                results.append({"image_id": image["id"], "category_id": category[d.label],
                                "bbox": [d.x1, d.y1, d.x2 - d.x1, d.y2 - d.y1],
                                "score": d.confidence})
    evaluation = COCOeval(gt, gt.loadRes(results), "bbox")
    evaluation.params.catIds = sorted({a["category_id"] for a in gt.dataset["annotations"]})
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    return {"map50": evaluation.stats[1], "map50_95": evaluation.stats[0],
            "images": len(gt.dataset["images"])}


def test_evaluate_reviewed_prints_two_models_side_by_side_and_equals_pycocotools(
        reviewed_set, tmp_path):
    from jobs.inference import get_detector

    out = io.StringIO()
    call_command("evaluate", "--reviewed", "--model", "yolov3-tiny", "--model", "tiny3",
                 stdout=out, stderr=io.StringIO())
    printed = out.getvalue()
    frames = len(set(Detection.objects.filter(job=reviewed_set[-1], review_status="confirmed")
                     .values_list("frame_index", flat=True)))
    assert frames >= 2  # the video's frames with a confirmed box are reviewed images too
    assert f"reviewed set: {6 + frames} images ({frames} video frames) of 7 jobs" in printed
    header = next(line for line in printed.splitlines() if "yolov3-tiny@1" in line)
    assert "tiny3@1" in header
    assert any(line.startswith("mAP@0.5 ") for line in printed.splitlines())
    assert "AP@0.5 horse" in printed and "(unknown)" in printed

    scoring = ModelScoring.objects.get()
    assert scoring.status == "succeeded"
    assert scoring.images_done == scoring.images_total == 2 * (6 + frames)
    by_model = {m["model"]: m for m in scoring.result["models"]}
    for ref, name in (("yolov3-tiny@1", "yolov3-tiny"), ("tiny3@1", "tiny3")):
        direct = pycocotools_on_the_export(reviewed_set, get_detector(model=name), tmp_path)
        mine = by_model[ref]
        assert mine["images"] == direct["images"] == 6 + frames
        assert mine["map50"] == pytest.approx(direct["map50"], abs=1e-9)
        assert mine["map50_95"] == pytest.approx(direct["map50_95"], abs=1e-9)
    tiny3 = by_model["tiny3@1"]
    # What the 3-class model cannot know is said, and costs it in the all-classes mAP.
    assert {"horse", "cat"} <= set(tiny3["classes_unknown_to_model"])
    assert not set(KEPT) & set(tiny3["classes_unknown_to_model"])
    assert tiny3["shared_map50"] > tiny3["map50"]
    assert by_model["yolov3-tiny@1"]["classes_unknown_to_model"] == []
    for model in by_model.values():
        assert 0 < model["precision"] <= 1 and 0 < model["recall"] <= 1
        classes = {row["class"] for row in model["per_class"]}
        assert classes == set(scoring.result["dataset"]["classes"])


def test_the_scores_page_runs_a_scoring_as_a_job_and_shows_the_table(
        reviewed_set, reviewer, client):
    client.force_login(reviewer)
    page = reverse("admin:jobs_job_scores")
    empty = client.get(page)
    assert empty.status_code == 200 and b"No scoring yet" in empty.content
    refused = client.post(page, {"model": ["nosuch"]})
    assert refused.status_code == 400 and b"unknown model" in refused.content
    started = client.post(page, {"model": ["yolov3-tiny", "tiny3@1"]})
    assert started.status_code == 302  # queued; the (eager) worker ran it
    scoring = ModelScoring.objects.get()
    assert scoring.model_refs == ["yolov3-tiny@1", "tiny3@1"]
    assert scoring.status == "succeeded", scoring.error
    assert scoring.worker and scoring.images_done == scoring.images_total
    assert scoring.images_total == 2 * scoring.result["dataset"]["images"]
    shown = client.get(page).content.decode()
    assert 'id="pmr-scores-table"' in shown and "tiny3@1" in shown
    assert "not a class of this model" in shown
    assert f"{scoring.result['dataset']['images']} image(s)" in shown
    result = json.loads(json.dumps(scoring.result))
    assert len(result["models"]) == 2


def test_scoring_with_nothing_reviewed_is_refused(reviewer, client):
    client.force_login(reviewer)
    response = client.post(reverse("admin:jobs_job_scores"), {"model": ["yolov3-tiny"]})
    assert response.status_code == 400 and b"nothing is reviewed yet" in response.content
    assert not ModelScoring.objects.exists()
