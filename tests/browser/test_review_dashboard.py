"""The review dashboard in a real headless Chromium: log in, review an image job, export.

Screenshots go to test-artifacts/browser/ (kept by CI as the run's artifacts).
"""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.base import ContentFile

from jobs.models import Detection
from review.models import AddedBox, ReviewEvent
from tests.conftest import missing
from tests.factories import UserFactory, image_job_with_detections

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts" / "browser"

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def browser_page(monkeypatch):
    try:
        from playwright import sync_api
    except ImportError:
        missing("playwright is not installed")
    # Playwright's sync API keeps an event loop on this thread; the ORM calls the test
    # makes in between are still plain synchronous calls, one at a time.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    if not Path(CHROMIUM).exists():
        missing("no Chromium: install the Debian packages chromium and chromium-driver "
                    "(make test does, as root)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run",
            "--disable-quic"])
        page = browser.new_page(viewport={"width": 1400, "height": 1100}, accept_downloads=True)
        yield page
        browser.close()


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
    page.wait_for_load_state("networkidle")
    boxes = page.locator("#pmr-overlay g.pmr-box")
    assert boxes.count() == Detection.objects.filter(job=reviewed_job).count() == 6
    page.screenshot(path=str(ARTIFACTS / "01-job-page-with-boxes.png"), full_page=True)

    rows = page.locator("#pmr-detections tbody tr")
    confirmed_id = rows.nth(0).get_attribute("data-detection")
    rows.nth(0).locator("button.pmr-confirm").click()
    page.wait_for_load_state("networkidle")
    rejected_id = page.locator("#pmr-detections tbody tr").nth(1).get_attribute("data-detection")
    page.locator("#pmr-detections tbody tr").nth(1).locator("button.pmr-reject").click()
    page.wait_for_load_state("networkidle")

    # Draw a missed box by dragging over the picture (the form fills itself), then add it.
    overlay = page.locator("#pmr-overlay").bounding_box()
    scale = overlay["width"] / 768
    page.mouse.move(overlay["x"] + 20 * scale, overlay["y"] + 30 * scale)
    page.mouse.down()
    page.mouse.move(overlay["x"] + 60 * scale, overlay["y"] + 70 * scale, steps=5)
    page.mouse.move(overlay["x"] + 100 * scale, overlay["y"] + 120 * scale, steps=5)
    page.mouse.up()
    assert 15 <= float(page.input_value("#pmr-add-box input[name=x1]")) <= 25
    assert 115 <= float(page.input_value("#pmr-add-box input[name=y2]")) <= 125
    page.select_option("#pmr-add-box select[name=label]", "pottedplant")
    page.click("#pmr-add-box-button")
    page.wait_for_load_state("networkidle")
    assert page.locator("#pmr-overlay g.pmr-added").count() == 1
    assert page.locator(f"tr[data-detection='{confirmed_id}'] td.pmr-state").inner_text() \
        .startswith("confirmed by reviewer")
    assert page.locator(f"tr[data-detection='{rejected_id}']").get_attribute("class") \
        == "pmr-rejected"
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
    assert page.locator("#pmr-timeline polyline").count() >= 2
    assert page.locator("video").count() == 1
    moments = page.locator("#pmr-timeline a")
    moments.nth(moments.count() * 3 // 4).click()  # a moment about three quarters in
    page.wait_for_load_state("networkidle")
    frame = int(page.url.split("frame=")[1])
    assert 25 <= frame <= 35
    assert page.locator("#pmr-overlay image").get_attribute("href").endswith(f"/frame/{frame}")
    loaded = page.evaluate("""async () => {
        const href = document.querySelector('#pmr-overlay image').getAttribute('href');
        const response = await fetch(href);
        return [response.status, response.headers.get('content-type')];
    }""")
    assert loaded == [200, "image/jpeg"]
    page.screenshot(path=str(ARTIFACTS / "04-video-job-timeline.png"), full_page=True)
