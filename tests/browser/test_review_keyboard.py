"""Reviewing by keyboard only, in a real headless Chromium: a batch of 20 images and a video
job, with the stored review records checked and the page never reloaded (one navigation
per job). Also: label chips that do not overlap, and an accessibility check (axe-core)
of the job, video and overview pages.

Screenshots of each step go to test-artifacts/browser/.
"""

from __future__ import annotations

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from engine import decode_image
from jobs.models import Detection, Job
from review.models import AddedBox, ReviewEvent
from tests.browser.conftest import ARTIFACTS
from tests.factories import DetectionFactory, JobFactory, UserFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

DEMO_IMAGES = ("dog.jpg", "person.jpg", "horses.jpg", "eagle.jpg", "giraffe.jpg", "kite.jpg")


@pytest.fixture
def reviewer(db):
    user = UserFactory(username="reviewer", is_staff=True, is_superuser=True)
    user.set_password("review-pass-123")
    user.save()
    return user


def log_in(page, live_server, next_url: str) -> None:
    page.goto(f"{live_server.url}/admin/login/?next={next_url}")
    page.fill("#id_username", "reviewer")
    page.fill("#id_password", "review-pass-123")
    page.keyboard.press("Enter")
    page.wait_for_selector("body[data-pmr-ready=true]")
    page.wait_for_load_state("load")


@pytest.fixture
def batch(darknet_dir, tiny_fp32):
    """20 image jobs on the demo images, each with the detector's own detections."""
    found = {}
    for name in DEMO_IMAGES:
        pixels = decode_image(darknet_dir / name)
        found[name] = (pixels.shape, tiny_fp32.detect([pixels])[0])
    jobs = []
    for n in range(20):
        name = DEMO_IMAGES[n % len(DEMO_IMAGES)]
        (height, width, _), detections = found[name]
        stored = default_storage.save(f"uploads/images/batch/{n}-{name}",
                                      ContentFile((darknet_dir / name).read_bytes()))
        job = JobFactory(input_file=stored, width=width, height=height, original_filename=name)
        for d in detections:
            DetectionFactory(job=job, class_id=d.class_id, label=d.label, confidence=d.confidence,
                             x1=d.x1, y1=d.y1, x2=d.x2, y2=d.y2)
        jobs.append(job)
    return jobs[::-1]  # the job list's order: newest first


def watch(page) -> dict:
    """Counts the page's loads (a navigation or a reload; not the history entries the
    page makes itself) and collects its script errors."""
    seen = {"navigations": 0, "errors": []}

    def loaded(_page):
        seen["navigations"] += 1
    page.on("load", loaded)
    page.on("response", lambda r: r.status >= 400 and seen["errors"].append(f"{r.status} {r.url}"))
    page.on("response", lambda r: r.request.resource_type == "fetch"
            and "json" not in r.headers.get("content-type", "")
            and seen["errors"].append(f"not JSON: {r.url}"))
    page.on("pageerror", lambda error: seen["errors"].append(str(error)))
    page.on("console", lambda m: m.type == "error" and seen["errors"].append(m.text))
    return seen


def selected(page) -> int:
    return int(page.get_attribute("#pmr-detections tr.pmr-selected", "data-detection"))


def wait_for_state(page, detection_id: int, status: str) -> None:
    page.wait_for_selector(f"#pmr-detections tr[data-detection='{detection_id}'].pmr-{status}")


def test_a_batch_of_20_images_is_reviewed_by_keyboard_without_a_reload(
        live_server, browser_page, reviewer, batch):
    page = browser_page
    log_in(page, live_server, f"/admin/jobs/job/{batch[0].pk}/change/")
    seen = watch(page)
    keys = page.keyboard
    for number, job in enumerate(batch):
        assert page.url.endswith(f"/admin/jobs/job/{job.pk}/change/") or \
            f"/admin/jobs/job/{job.pk}/change/?" in page.url
        ranked = list(Detection.objects.filter(job=job).order_by("-confidence", "id"))
        assert selected(page) == ranked[0].pk  # the best box is chosen on arrival
        keys.press("c")  # confirm it; the next one is chosen
        wait_for_state(page, ranked[0].pk, "confirmed")
        if len(ranked) > 1:
            assert selected(page) == ranked[1].pk
            keys.press("x")  # reject the second
            wait_for_state(page, ranked[1].pk, "rejected")
        if number == 0:
            page.screenshot(path=str(ARTIFACTS / "10-batch-confirm-reject.png"))
            keys.press("k")
            keys.press("k")  # back to the first box
            assert selected(page) == ranked[0].pk
            keys.press("r")  # relabel by type-ahead: "bic" + Enter is bicycle
            page.wait_for_selector("#pmr-label-input:focus")
            keys.type("bic")
            assert page.inner_text("#pmr-label-match") == "→ bicycle"
            page.screenshot(path=str(ARTIFACTS / "11-batch-relabel-type-ahead.png"))
            keys.press("Enter")
            wait_for_state(page, ranked[0].pk, "relabelled")
            keys.press("u")  # undo: confirmed again, as before the relabel
            wait_for_state(page, ranked[0].pk, "confirmed")
            keys.press("a")  # add a box: move it with the arrows, Shift resizes, Enter
            for key in ("ArrowLeft", "ArrowLeft", "ArrowUp", "Shift+ArrowRight"):
                keys.press(key)
            keys.press("Enter")
            page.wait_for_selector("#pmr-label-input:focus")
            keys.type("potted")
            keys.press("Enter")
            page.wait_for_selector("#pmr-overlay g.pmr-added")
            keys.press("+")
            keys.press("+")
            zoom = float(page.get_attribute("#pmr-viewer", "data-zoom"))
            assert zoom > 1.5
            page.screenshot(path=str(ARTIFACTS / "12-batch-added-box-zoomed.png"))
            keys.press("0")
            assert float(page.get_attribute("#pmr-viewer", "data-zoom")) == 1
            keys.press("?")
            page.wait_for_selector("#pmr-help[open]")
            page.screenshot(path=str(ARTIFACTS / "13-keys-help.png"))
            keys.press("Escape")
        if number < len(batch) - 1:
            with page.expect_navigation():
                keys.press("n")  # the next image with detections: the next job
            page.wait_for_selector("body[data-pmr-ready=true]")
    page.screenshot(path=str(ARTIFACTS / "14-batch-last-job.png"))
    assert seen["errors"] == []
    assert "pmr-error" not in (page.get_attribute("#pmr-message", "class") or "")
    assert seen["navigations"] == len(batch) - 1  # one per job after the first: no reload

    for number, job in enumerate(batch):
        ranked = list(Detection.objects.filter(job=job).order_by("-confidence", "id"))
        assert ranked[0].review_status == "confirmed"
        assert ranked[0].reviewed_by == reviewer
        if len(ranked) > 1:
            assert ranked[1].review_status == "rejected"
        assert all(d.review_status == "unreviewed" for d in ranked[2:])
        actions = list(ReviewEvent.objects.filter(job=job).order_by("id")
                       .values_list("action", flat=True))
        expected = ["confirm", "reject"][:min(2, len(ranked))]
        if number == 0:
            expected += ["relabel", "confirm", "add_box"]
        assert actions == expected
    box = AddedBox.objects.get()
    first = batch[0]
    assert (box.job_id, box.label, box.created_by) == (first.pk, "pottedplant", reviewer)
    # Centred, a quarter of each side, moved left 4% and up 2%, widened by 2% of the width.
    assert abs(box.x1 - 0.335 * first.width) <= 2 and abs(box.y1 - 0.355 * first.height) <= 2
    assert abs(box.x2 - 0.605 * first.width) <= 2


def chip_rectangles(page) -> list[dict]:
    return page.eval_on_selector_all(
        "#pmr-overlay rect.pmr-chip",
        "rects => rects.map(r => { const b = r.getBoundingClientRect();"
        " return {x: b.x, y: b.y, w: b.width, h: b.height}; })")


def test_the_labels_on_dog_jpg_are_chips_that_do_not_overlap(live_server, browser_page,
                                                             reviewer, batch):
    dog = next(job for job in batch if job.original_filename == "dog.jpg")
    page = browser_page
    log_in(page, live_server, f"/admin/jobs/job/{dog.pk}/change/")
    labels = set(Detection.objects.filter(job=dog).values_list("label", flat=True))
    assert {"car", "truck"} <= labels or {"truck", "bicycle"} <= labels
    chips = chip_rectangles(page)
    assert len(chips) == Detection.objects.filter(job=dog).count()
    for i, a in enumerate(chips):
        for b in chips[i + 1:]:
            apart = (a["x"] + a["w"] <= b["x"] + 0.5 or b["x"] + b["w"] <= a["x"] + 0.5
                     or a["y"] + a["h"] <= b["y"] + 0.5 or b["y"] + b["h"] <= a["y"] + 0.5)
            assert apart, (a, b)
    # Chip text contrasts with its background: black on light colours, white on dark.
    colours = page.eval_on_selector_all(
        "#pmr-overlay g.pmr-box", "gs => gs.map(g => [g.querySelector('rect.pmr-chip')"
        ".getAttribute('fill'), g.querySelector('text').getAttribute('fill')])")
    assert all(text in ("#000000", "#ffffff") for _, text in colours)
    page.screenshot(path=str(ARTIFACTS / "15-dog-chips.png"))


@pytest.fixture
def video_job(reviewer, eager_celery, tiny_paths, videos_dir):
    from rest_framework.test import APIClient

    api = APIClient()
    api.force_authenticate(reviewer)
    clip = (videos_dir / "intel_person-bicycle-car-detection_from_gif.mp4").read_bytes()
    answer = api.post("/api/detect/video", {"video": ContentFile(clip, name="street.mp4")},
                      format="multipart")
    job = Job.objects.get(pk=answer.json()["id"])
    assert job.status == "succeeded"
    return job


def frames_with_detections(job) -> list[int]:
    return sorted(set(Detection.objects.filter(job=job).values_list("frame_index", flat=True)))


def test_a_video_is_reviewed_by_keyboard_with_the_player_and_the_timeline_as_one(
        live_server, browser_page, video_job):
    page = browser_page
    frames = frames_with_detections(video_job)
    log_in(page, live_server, f"/admin/jobs/job/{video_job.pk}/change/?frame={frames[0]}")
    seen = watch(page)
    keys = page.keyboard
    page.wait_for_function("document.querySelector('#pmr-video').readyState >= 2")
    assert page.locator("#pmr-timeline .pmr-tick").count() >= 3  # a time axis with ticks
    lanes = page.locator("#pmr-timeline .pmr-lane")
    labels = set(Detection.objects.filter(job=video_job).values_list("label", flat=True))
    assert lanes.count() == len(labels)

    keys.press("n")  # the next frame with detections
    page.wait_for_function(f"new URLSearchParams(location.search).get('frame') === "
                           f"'{frames[1]}'")
    boxes = page.locator("#pmr-overlay g.pmr-box")
    assert boxes.count() == Detection.objects.filter(job=video_job,
                                                     frame_index=frames[1]).count()
    ranked = list(Detection.objects.filter(job=video_job, frame_index=frames[1])
                  .order_by("-confidence", "id"))
    keys.press("c")
    wait_for_state(page, ranked[0].pk, "confirmed")
    page.screenshot(path=str(ARTIFACTS / "16-video-next-frame-confirmed.png"))

    # Seek from the timeline by keyboard: focus it (Tab order), End, then back one second.
    page.focus("#pmr-timeline")
    keys.press("End")
    keys.press("ArrowLeft")
    fps = video_job.video.fps
    last_ms = video_job.video.duration_ms
    # End moves the URL to the last frame first, then ArrowLeft a second back: wait for
    # the second move itself (a generous timeout), not for the first change of the URL.
    page.wait_for_function(
        "() => Math.abs(Number(new URLSearchParams(location.search).get('frame')) * 1000 / "
        f"{fps} - {last_ms - 1000}) <= {1000 / fps + 1}", timeout=60_000)
    frame = int(page.evaluate("new URLSearchParams(location.search).get('frame')"))
    assert frame != frames[1]
    assert abs(frame * 1000 / fps - (last_ms - 1000)) <= 1000 / fps + 1
    page.wait_for_function(
        f"Math.abs(document.querySelector('#pmr-video').currentTime - {(frame + 0.5) / fps})"
        f" < {0.6 / fps}")
    playhead = float(page.get_attribute("#pmr-timeline", "data-time"))
    assert abs(playhead - frame * 1000 / fps) < 1
    assert page.locator("#pmr-overlay g.pmr-box").count() == \
        Detection.objects.filter(job=video_job, frame_index=frame).count()
    page.screenshot(path=str(ARTIFACTS / "17-video-seeked-from-timeline.png"))

    keys.press("Home")  # still on the timeline: the start
    page.wait_for_function("new URLSearchParams(location.search).get('frame') === '0'")
    page.focus("#pmr-viewer")
    keys.press(" ")  # play: the playhead moves and the boxes follow the video
    page.wait_for_function("document.querySelector('#pmr-video').currentTime > 1.0",
                           timeout=30_000)
    keys.press(" ")  # pause
    page.wait_for_function("document.querySelector('#pmr-video').paused")
    at = page.evaluate("document.querySelector('#pmr-video').currentTime")
    assert float(page.get_attribute("#pmr-timeline", "data-time")) > 900
    page.screenshot(path=str(ARTIFACTS / "18-video-paused-after-play.png"))
    page.wait_for_function(f"new URLSearchParams(location.search).get('frame') === "
                           f"'{int(at * fps)}'")
    assert seen["errors"] == [], seen["errors"]
    assert seen["navigations"] == 0
    assert "pmr-error" not in (page.get_attribute("#pmr-message", "class") or "")
    assert ReviewEvent.objects.filter(job=video_job).count() == 1
    assert Detection.objects.get(pk=ranked[0].pk).review_status == "confirmed"


@pytest.fixture
def scene_job(reviewer, eager_celery, tiny_paths, coco128_dir, tmp_path):
    """A tracked video job on the test scene (two people crossing, a bus)."""
    from rest_framework.test import APIClient

    from tests import tracking_scene

    frames, _ = tracking_scene.render(coco128_dir)
    path = tracking_scene.write_lossless(frames, tmp_path / "scene.mp4")
    api = APIClient()
    api.force_authenticate(reviewer)
    answer = api.post("/api/detect/video", {"video": ContentFile(path.read_bytes(),
                                                                 name="scene.mp4")},
                      format="multipart")
    job = Job.objects.get(pk=answer.json()["id"])
    assert job.status == "succeeded" and job.video.tracks == 3
    return job


def test_a_track_is_one_bar_and_is_reviewed_split_and_merged_by_keyboard(
        live_server, browser_page, scene_job):
    from jobs.models import Track

    page = browser_page
    job = scene_job
    log_in(page, live_server, f"/admin/jobs/job/{job.pk}/change/?frame=30")
    seen = watch(page)
    keys = page.keyboard
    tracks = Track.objects.filter(job=job)
    assert page.locator("#pmr-timeline .pmr-track").count() == tracks.count() == 3
    members = {t.track_id: set(Detection.objects.filter(job=job, track_id=t.track_id)
                               .values_list("pk", flat=True)) for t in tracks}

    # A track's bar takes the player to its first box.
    bus = tracks.get(label="bus")
    page.click(f"#pmr-timeline .pmr-track[data-track='{bus.track_id}'] rect")
    page.wait_for_function(f"new URLSearchParams(location.search).get('frame') === "
                           f"'{bus.first_frame}'")
    page.wait_for_selector("#pmr-detections tr.pmr-selected")
    assert Detection.objects.get(pk=selected(page)).track_id == bus.track_id
    assert page.is_visible("#pmr-track")
    page.focus("#pmr-viewer")
    keys.press("Shift+C")  # confirm every box of the bus's track
    page.wait_for_function("document.querySelector('#pmr-message').textContent"
                           f".startsWith('confirm track #{bus.track_id}')")
    assert set(Detection.objects.filter(job=job, track_id=bus.track_id).values_list(
        "review_status", flat=True)) == {"confirmed"}
    assert ReviewEvent.objects.filter(job=job, action="confirm").count() == \
        len(members[bus.track_id])
    page.screenshot(path=str(ARTIFACTS / "19-video-track-confirmed.png"))

    # Split a person's track a second in, then merge the halves back.
    person = tracks.filter(label="person").order_by("track_id").first()
    frame = 15
    box = Detection.objects.get(job=job, track_id=person.track_id, frame_index=frame)
    page.focus("#pmr-timeline")
    keys.press("Home")
    keys.press("ArrowRight")  # one second: frame 15 at 15 fps
    page.wait_for_function(f"new URLSearchParams(location.search).get('frame') === '{frame}'")
    page.click(f"#pmr-detections tr[data-detection='{box.pk}']")
    page.focus("#pmr-viewer")
    keys.press("s")
    page.wait_for_function("document.querySelector('#pmr-message').textContent"
                           f".startsWith('track #{person.track_id} split')")
    assert Track.objects.filter(job=job).count() == 4
    new_id = Detection.objects.get(pk=box.pk).track_id
    assert new_id not in members
    page.wait_for_function("document.querySelectorAll('#pmr-timeline .pmr-track').length === 4")
    page.click(f"#pmr-detections tr[data-detection='{box.pk}']")
    page.focus("#pmr-viewer")
    keys.press("m")
    page.wait_for_selector("#pmr-label-form:not([hidden])")
    keys.type(str(person.track_id))
    keys.press("Enter")
    page.wait_for_function("document.querySelector('#pmr-message').textContent"
                           f".startsWith('track #{new_id} merged into #{person.track_id}')")
    assert {t.track_id: set(Detection.objects.filter(job=job, track_id=t.track_id)
                            .values_list("pk", flat=True))
            for t in Track.objects.filter(job=job)} == members
    page.wait_for_function("document.querySelectorAll('#pmr-timeline .pmr-track').length === 3")
    page.screenshot(path=str(ARTIFACTS / "20-video-track-split-and-merged.png"))
    assert seen["errors"] == [], seen["errors"]
    assert seen["navigations"] == 0


def axe_violations(page) -> list[dict]:
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    return [v for v in results.response["violations"]
            if v.get("impact") in ("serious", "critical")]


def test_the_job_video_and_overview_pages_pass_the_accessibility_check(
        live_server, browser_page, reviewer, batch, video_job):
    page = browser_page
    log_in(page, live_server, f"/admin/jobs/job/{batch[0].pk}/change/")
    for url in (f"/admin/jobs/job/{batch[0].pk}/change/",
                f"/admin/jobs/job/{video_job.pk}/change/", "/admin/jobs/job/overview/"):
        page.goto(f"{live_server.url}{url}")
        page.wait_for_load_state("networkidle")
        found = axe_violations(page)
        assert found == [], [(v["id"], v["help"], [n["target"] for n in v["nodes"]][:3])
                             for v in found]
    page.screenshot(path=str(ARTIFACTS / "19-overview.png"), full_page=True)
