"""The review dashboard in a real headless Chromium: log in, review an image job, export.

Screenshots go to test-artifacts/browser/ (kept by CI as the run's artifacts).
"""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from django.core.files.base import ContentFile

from jobs.models import Detection
from review.models import AddedBox, ReviewEvent
from tests.browser.conftest import ARTIFACTS
from tests.factories import UserFactory, image_job_with_detections

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def reviewed_job(darknet_dir, tiny_paths):
    user = UserFactory(username="reviewer", is_staff=True, is_superuser=True)
    user.set_password("review-pass-123")
    user.save()
    return image_job_with_detections(darknet_dir / "dog.jpg", tiny_paths, "browser")


def test_a_reviewer_confirms_rejects_adds_a_box_and_exports_coco(live_server, browser_page,
                                                                  reviewed_job):
    page = browser_page
    page.goto(f"{live_server.url}/admin/login/?next=/admin/")
    page.fill("#id_username", "reviewer")
    page.fill("#id_password", "review-pass-123")
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")

    page.goto(f"{live_server.url}/admin/jobs/job/{reviewed_job.pk}/change/")
    page.wait_for_selector("body[data-pmr-ready=true]")
    boxes = page.locator("#pmr-overlay g.pmr-box")
    assert boxes.count() == Detection.objects.filter(job=reviewed_job).count() == 6
    page.screenshot(path=str(ARTIFACTS / "01-job-page-with-boxes.png"), full_page=True)

    rows = page.locator("#pmr-detections tbody tr")
    confirmed_id = rows.nth(0).get_attribute("data-detection")
    rows.nth(0).locator("button.pmr-confirm").click()
    page.wait_for_selector(f"tr[data-detection='{confirmed_id}'].pmr-confirmed")
    rejected_id = rows.nth(1).get_attribute("data-detection")
    rows.nth(1).locator("button.pmr-reject").click()
    page.wait_for_selector(f"tr[data-detection='{rejected_id}'].pmr-rejected")
    # Hovering a row highlights its box.
    rows.nth(2).hover()
    hovered = rows.nth(2).get_attribute("data-detection")
    assert "pmr-hover" in page.get_attribute(f"#pmr-overlay g[data-detection='{hovered}']",
                                             "class")

    # Draw a missed box by dragging over the picture, then name it.
    page.click("#pmr-add")
    overlay = page.locator("#pmr-overlay").bounding_box()
    scale = overlay["width"] / 768
    page.mouse.move(overlay["x"] + 20 * scale, overlay["y"] + 30 * scale)
    page.mouse.down()
    page.mouse.move(overlay["x"] + 60 * scale, overlay["y"] + 70 * scale, steps=5)
    page.mouse.move(overlay["x"] + 100 * scale, overlay["y"] + 120 * scale, steps=5)
    page.mouse.up()
    page.fill("#pmr-label-input", "pottedplant")
    page.click("#pmr-label-form button[type=submit]")
    page.wait_for_selector("#pmr-overlay g.pmr-added")
    assert page.locator(f"tr[data-detection='{confirmed_id}'] td.pmr-state").inner_text() \
        .startswith("confirmed by reviewer")
    assert "pmr-rejected" in page.get_attribute(f"tr[data-detection='{rejected_id}']", "class")
    page.screenshot(path=str(ARTIFACTS / "02-after-review.png"), full_page=True)

    page.goto(f"{live_server.url}/admin/jobs/job/")
    page.check(f"input[name=_selected_action][value='{reviewed_job.pk}']")
    page.select_option("select[name=action]", "export_coco")
    with page.expect_download() as download:
        page.click("button[name=index]")
    target = ARTIFACTS / "export-coco.zip"
    download.value.save_as(str(target))
    page.screenshot(path=str(ARTIFACTS / "03-job-list.png"), full_page=True)

    annotations = json.loads(zipfile.ZipFile(io.BytesIO(target.read_bytes()))
                             .read("annotations.json"))
    names = {c["id"]: c["name"] for c in annotations["categories"]}
    exported = sorted(names[a["category_id"]] for a in annotations["annotations"])
    confirmed = Detection.objects.get(pk=confirmed_id)
    assert exported == sorted([confirmed.label, "pottedplant"])
    assert Detection.objects.get(pk=rejected_id).review_status == "rejected"
    box = AddedBox.objects.get()
    assert abs(box.x1 - 20) <= 2 and abs(box.y1 - 30) <= 2 and abs(box.x2 - 100) <= 2
    assert [e.action for e in ReviewEvent.objects.order_by("id")] == ["confirm", "reject",
                                                                      "add_box"]


def test_a_video_job_page_has_a_timeline_that_chooses_the_frame(live_server, browser_page,
                                                                  eager_celery, tiny_paths,
                                                                  videos_dir):
    from rest_framework.test import APIClient

    user = UserFactory(username="reviewer", is_staff=True, is_superuser=True)
    user.set_password("review-pass-123")
    user.save()
    api = APIClient()
    api.force_authenticate(user)
    clip = (videos_dir / "intel_person-bicycle-car-detection_from_gif.mp4").read_bytes()
    job_id = api.post("/api/detect/video", {"video": ContentFile(clip, name="street.mp4"),
                                            "annotate": "true"}, format="multipart").json()["id"]
    page = browser_page
    page.goto(f"{live_server.url}/admin/login/?next=/admin/jobs/job/{job_id}/change/")
    page.fill("#id_username", "reviewer")
    page.fill("#id_password", "review-pass-123")
    page.click("input[type=submit]")
    page.wait_for_load_state("networkidle")
    page.wait_for_selector("body[data-pmr-ready=true]")
    assert page.locator("#pmr-timeline .pmr-lane").count() >= 2
    assert page.locator("video#pmr-video").count() == 1
    timeline = page.locator("#pmr-timeline").bounding_box()
    before = page.evaluate("new URLSearchParams(location.search).get('frame')")  # the busiest
    # A moment about three quarters in (the lanes start after their names, at 120 of 960),
    # clicked on the time axis (a track's bar, below, would go to that track instead).
    x = timeline["x"] + timeline["width"] * (120 + (960 - 128) * 0.75) / 960
    height = page.evaluate("document.querySelector('#pmr-timeline').viewBox.baseVal.height")
    page.mouse.click(x, timeline["y"] + timeline["height"] * 13 / height)
    page.wait_for_function(f"new URLSearchParams(location.search).get('frame') !== '{before}'")
    frame = int(page.evaluate("new URLSearchParams(location.search).get('frame')"))
    assert 25 <= frame <= 35
    page.wait_for_function(f"document.querySelector('#pmr-frame-label').textContent"
                           f".startsWith('Frame {frame} ')")
    loaded = page.evaluate(f"""async () => {{
        const response = await fetch('/admin/jobs/job/{job_id}/frame/{frame}');
        return [response.status, response.headers.get('content-type')];
    }}""")
    assert loaded == [200, "image/jpeg"]  # the frame, as the server decodes it
    page.screenshot(path=str(ARTIFACTS / "04-video-job-timeline.png"), full_page=True)
