"""Tracking objects through videos, measured against a video whose tracks are known
(``tests.tracking_scene``: real coco128 objects on set paths) with motmetrics (MOTA,
IDF1, ID switches); nested duplicates; the tracks API; one part or several."""

from __future__ import annotations

import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from engine.tracking import TrackBox, TrackerConfig, nested_duplicates, track
from jobs.models import Detection, Track
from tests import tracking_scene as scene

CROSSINGS = 1  # the two people


@pytest.fixture(scope="session")
def scene_frames(coco128_dir):
    return scene.render(coco128_dir)


@pytest.fixture(scope="session")
def scene_detections(scene_frames, tiny_fp32):
    """What yolov3-tiny finds in each frame of the scene (min_confidence 0.25)."""
    frames, _ = scene_frames
    found = []
    for start in range(0, len(frames), 8):
        found += tiny_fp32.detect(frames[start:start + 8], min_confidence=0.25)
    return found


def _boxes(detections) -> tuple[list, dict]:
    frames, by_key, key = [], {}, 0
    for index, found in enumerate(detections):
        boxes = []
        for det in found:
            boxes.append(TrackBox(key, det.class_id, det.confidence, det.x1, det.y1, det.x2,
                                  det.y2))
            by_key[key] = (index, boxes[-1])
            key += 1
        frames.append((index, boxes))
    return frames, by_key


def _tracked(ids: dict, by_key: dict) -> list[tuple[int, int, tuple]]:
    return [(by_key[key][0], track_id, (by_key[key][1].x1, by_key[key][1].y1,
                                        by_key[key][1].x2, by_key[key][1].y2))
            for key, track_id in ids.items()]


def test_the_scene_is_tracked_within_the_mot_targets(scene_frames, scene_detections):
    _, truth = scene_frames
    frames, by_key = _boxes(scene_detections)
    ids = track(frames, fps=scene.FPS)
    scores = scene.mot_scores(truth, _tracked(ids, by_key))
    print("MOT scores of the scene:", scores)
    assert scores["idf1"] >= 0.8
    assert scores["num_switches"] <= CROSSINGS
    assert scores["mota"] >= 0.8
    assert len(set(ids.values())) == len(scene.ACTORS)


def test_nested_duplicates_make_no_ghost_tracks(scene_frames, scene_detections):
    """yolov3-tiny keeps a second, inner box on most people of the scene: those boxes get
    no track of their own. Without the rule, each would be a ghost object."""
    _, truth = scene_frames
    frames, by_key = _boxes(scene_detections)
    config = TrackerConfig()
    nested = set().union(*(nested_duplicates(boxes, config.nested_overlap)
                           for _, boxes in frames))
    assert len(nested) >= 0.5 * len(scene.ACTORS) * scene.FRAMES * 0.5  # many, to matter
    ids = track(frames, fps=scene.FPS, config=config)
    assert not nested & set(ids)
    ghosts = track(frames, fps=scene.FPS, config=TrackerConfig(nested_overlap=None))
    assert len(set(ghosts.values())) > len(scene.ACTORS)
    assert scene.mot_scores(truth, _tracked(ghosts, by_key))["idf1"] < \
        scene.mot_scores(truth, _tracked(ids, by_key))["idf1"]


def _walk(frames: int, *, hidden: range = range(0), start: float = 0, step: float = 8,
          key_base: int = 0, class_id: int = 0, confidence: float = 0.9):
    """One box moving right, ``step`` px a frame, missing in the ``hidden`` frames."""
    return {index: TrackBox(key_base + index, class_id, confidence, start + step * index, 50,
                            start + step * index + 60, 170)
            for index in range(frames) if index not in hidden}


def _frames(*walks, frames: int):
    return [(index, [walk[index] for walk in walks if index in walk]) for index in range(frames)]


def test_an_object_hidden_within_the_buffer_keeps_its_id_and_one_hidden_longer_does_not():
    walk = _walk(40, hidden=range(15, 24))  # 9 frames at 10 fps: 0.9 s
    kept = track(_frames(walk, frames=40), fps=10, config=TrackerConfig(buffer_ms=1000))
    assert set(kept) == set(k.key for k in walk.values()) and set(kept.values()) == {1}
    split = track(_frames(walk, frames=40), fps=10, config=TrackerConfig(buffer_ms=500))
    assert set(split.values()) == {1, 2}
    assert all(split[walk[i].key] == 1 for i in range(15)) and \
        all(split[walk[i].key] == 2 for i in range(24, 40))


def test_every_box_of_an_object_is_in_its_track_from_its_first_frame():
    walk = _walk(12)
    ids = track(_frames(walk, frames=12), fps=10)
    assert ids == {box.key: 1 for box in walk.values()}


def test_flicker_is_not_an_object_and_ids_follow_first_appearance():
    late = _walk(30, start=300, key_base=1000, step=-4)
    early = _walk(30, start=0, key_base=2000)
    flicker = {5: TrackBox(9999, 0, 0.95, 500, 300, 540, 360),
               6: TrackBox(9998, 0, 0.95, 500, 300, 540, 360)}
    late = {i: box for i, box in late.items() if i >= 3}  # appears at frame 3
    ids = track(_frames(late, early, flicker, frames=30), fps=10)
    assert 9999 not in ids and 9998 not in ids
    assert ids[early[0].key] == 1 and ids[late[3].key] == 2
    # The same detections, the same tracks.
    assert track(_frames(late, early, flicker, frames=30), fps=10) == ids


def test_classes_are_tracked_apart():
    person = _walk(20)
    dog = _walk(20, key_base=500, class_id=16)  # the same boxes, another class
    ids = track(_frames(person, dog, frames=20), fps=10)
    assert {ids[b.key] for b in person.values()} == {1}
    assert {ids[b.key] for b in dog.values()} == {2}


# --- through the service ----------------------------------------------------------------

@pytest.fixture(scope="session")
def scene_video(scene_frames, tmp_path_factory):
    frames, _ = scene_frames
    return scene.write_lossless(frames, tmp_path_factory.mktemp("scene") / "scene.mp4")


def _submit(api, path, **fields):
    response = api.post("/api/detect/video", {
        "video": SimpleUploadedFile("scene.mp4", path.read_bytes()), **fields},
        format="multipart")
    assert response.status_code == 202, response.json()
    job = api.get(response.json()["status_url"]).json()
    assert job["status"] == "succeeded", job
    return job


def _membership(job_id) -> dict[int, list]:
    tracks: dict[int, list] = {}
    for row in Detection.objects.filter(job_id=job_id, track_id__isnull=False).order_by(
            "frame_index", "id"):
        tracks.setdefault(row.track_id, []).append(
            (row.frame_index, row.label, round(row.x1, 3), round(row.y1, 3)))
    return tracks


@pytest.mark.django_db(transaction=True)
def test_a_video_in_several_parts_has_the_tracks_of_one_part(api, eager_celery, tiny_paths,
                                                             scene_frames, scene_video,
                                                             settings):
    _, truth = scene_frames
    settings.VIDEO_PART_MIN_FRAMES = 30  # 90 frames: three parts, each a multiple of 8
    settings.VIDEO_MAX_PARTS = 3
    parted = _submit(api, scene_video)
    assert len(parted["parts"]) == 3
    settings.VIDEO_MAX_PARTS = 1
    whole = _submit(api, scene_video)
    assert len(whole["parts"]) == 1
    assert _membership(parted["id"]) == _membership(whole["id"])
    for job in (parted, whole):
        tracked = [(row.frame_index, row.track_id, (row.x1, row.y1, row.x2, row.y2))
                   for row in Detection.objects.filter(job_id=job["id"],
                                                       track_id__isnull=False)]
        scores = scene.mot_scores(truth, tracked)
        print(f"{len(job['parts'])} part(s):", scores)
        assert scores["idf1"] >= 0.8 and scores["num_switches"] <= CROSSINGS
    assert parted["tracking"] == {"enabled": True, "tracks": 3, "buffer_ms": 1000,
                                  "activation_threshold": 0.5}


@pytest.mark.django_db(transaction=True)
def test_the_tracks_api(api, eager_celery, tiny_paths, scene_video):
    job = _submit(api, scene_video, track_buffer_ms=1500)
    assert job["tracking"]["buffer_ms"] == 1500
    summary = {row["label"]: row for row in job["summary"]}
    assert summary["person"]["objects"] == 2 and summary["bus"]["objects"] == 1
    assert summary["person"]["count"] > 2 * scene.FRAMES * 0.8  # boxes, inner ones too

    listed = api.get(job["tracks_url"]).json()
    tracks = listed["results"]
    assert [t["track_id"] for t in tracks] == [1, 2, 3] and listed["next"] is None
    assert sorted(t["label"] for t in tracks) == ["bus", "person", "person"]
    for item in tracks:
        stored = Detection.objects.filter(job_id=job["id"], track_id=item["track_id"])
        assert item["frames"] == stored.count()
        assert item["first_ms"] == min(r.timestamp_ms for r in stored)
        assert item["duration_ms"] == item["last_ms"] - item["first_ms"]
        first = stored.order_by("frame_index").first()
        assert item["first_box"] == {"x1": round(first.x1, 2), "y1": round(first.y1, 2),
                                     "x2": round(first.x2, 2), "y2": round(first.y2, 2)}
    bus = next(t for t in tracks if t["label"] == "bus")
    people = api.get(job["tracks_url"], {"label": "person"}).json()["results"]
    assert len(people) == 2
    longer = api.get(job["tracks_url"], {"min_duration_ms": bus["duration_ms"] + 1}).json()
    assert [t["label"] for t in longer["results"]] == ["person", "person"]  # there throughout
    late = api.get(job["tracks_url"], {"t_from_ms": bus["last_ms"] + 1}).json()["results"]
    assert bus["track_id"] not in [t["track_id"] for t in late]
    paged = api.get(job["tracks_url"], {"page_size": 2}).json()
    assert len(paged["results"]) == 2 and paged["next"]
    assert len(api.get(paged["next"]).json()["results"]) == 1

    detail = api.get(f"{job['tracks_url']}/{bus['track_id']}").json()
    assert len(detail["boxes"]) == bus["frames"]
    assert [b["frame_index"] for b in detail["boxes"]] == sorted(
        b["frame_index"] for b in detail["boxes"])
    rows = api.get(job["detections_url"], {"track_id": bus["track_id"]}).json()["results"]
    assert len(rows) == bus["frames"] and {r["track_id"] for r in rows} == {bus["track_id"]}
    assert api.get(f"{job['tracks_url']}/99").status_code == 404

    segments = api.get(job["segments_url"], {"by": "track"}).json()
    assert segments["by"] == "track"
    assert sorted({s["track_id"] for s in segments["segments"]}) == [1, 2, 3]
    assert api.get(job["segments_url"], {"by": "object"}).status_code == 400
    assert Track.objects.filter(job_id=job["id"]).count() == 3


@pytest.mark.django_db(transaction=True)
def test_tracking_false_stores_what_an_untracked_video_always_stored(api, eager_celery,
                                                                    tiny_paths, scene_video):
    tracked = _submit(api, scene_video)
    untracked = _submit(api, scene_video, tracking="false")

    def boxes(job_id):
        return list(Detection.objects.filter(job_id=job_id).order_by("frame_index", "id")
                    .values_list("frame_index", "timestamp_ms", "class_id", "label",
                                 "confidence", "x1", "y1", "x2", "y2"))
    assert boxes(untracked["id"]) == boxes(tracked["id"])
    assert not Detection.objects.filter(job_id=untracked["id"], track_id__isnull=False).exists()
    assert untracked["tracks_url"] is None
    assert untracked["tracking"] == {"enabled": False, "tracks": None, "buffer_ms": None,
                                     "activation_threshold": None}
    assert {row["objects"] for row in untracked["summary"]} == {None}
    refused = api.get(f"/api/jobs/{untracked['id']}/tracks")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "not_tracked"
    by_track = api.get(untracked["segments_url"], {"by": "track"})
    assert by_track.status_code == 409

    # Tracked afterwards, from its stored boxes (no model run): the tracks of a tracked run.
    from django.core.management import call_command
    out = io.StringIO()
    call_command("track_videos", untracked["id"], stdout=out)
    assert out.getvalue().strip() == f"{untracked['id']}: 3 tracks"
    assert list(_membership(untracked["id"]).values()) == list(
        _membership(tracked["id"]).values())
    assert api.get(f"/api/jobs/{untracked['id']}").json()["tracking"]["tracks"] == 3


@pytest.mark.django_db
def test_tracking_parameters_are_checked(api, scene_video):
    for fields, field in (({"track_buffer_ms": -1}, "track_buffer_ms"),
                          ({"track_activation_threshold": 2}, "track_activation_threshold"),
                          ({"tracking": "false", "track_buffer_ms": 500}, "track_buffer_ms")):
        response = api.post("/api/detect/video", {
            "video": SimpleUploadedFile("scene.mp4", scene_video.read_bytes()), **fields},
            format="multipart")
        assert response.status_code == 400, response.json()
        assert field in response.json()["error"]["details"]


@pytest.mark.django_db(transaction=True)
def test_the_annotated_video_draws_each_track_in_its_own_colour(api, eager_celery, tiny_paths,
                                                                scene_video, tmp_path):
    import cv2
    import numpy as np

    from engine.annotate import label_colour, track_colour

    job = _submit(api, scene_video, annotate="true")
    annotated = api.get(job["annotated_url"])
    assert annotated.status_code == 200
    path = tmp_path / "annotated.mp4"
    path.write_bytes(b"".join(annotated.streaming_content))
    capture = cv2.VideoCapture(str(path))
    capture.set(cv2.CAP_PROP_POS_FRAMES, 30)
    ok, bgr = capture.read()
    capture.release()
    assert ok
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(float)
    people = Detection.objects.filter(job_id=job["id"], frame_index=30, label="person",
                                      track_id__isnull=False)
    assert people.count() == 2
    for row in people:
        # The box's left edge, in the track's colour (the two people: two colours).
        x, top, bottom = round(row.x1), round(row.y1) + 5, round(row.y2) - 5
        edge = rgb[top:bottom, max(0, x - 1):x + 2].reshape(-1, 3).mean(axis=0)
        assert np.abs(edge - track_colour(row.track_id)).max() < 60, (row.track_id, edge)
    colours = {track_colour(row.track_id) for row in people}
    assert len(colours) == 2 and label_colour(0) not in colours


@pytest.mark.django_db(transaction=True)
def test_tracks_are_reviewed_merged_split_and_exported(api, eager_celery, tiny_paths,
                                                       scene_video, client, tmp_path):
    import json
    import zipfile

    import motmetrics as mm
    from django.urls import reverse

    from review.models import ReviewEvent
    from tests.factories import UserFactory

    job = _submit(api, scene_video)
    job_id = job["id"]
    client.force_login(UserFactory(username="track-reviewer", is_staff=True,
                                   is_superuser=True))

    def post(name, track_id, **data):
        return client.post(reverse(f"admin:jobs_job_track_{name}", args=[job_id, track_id]),
                           data, headers={"Accept": "application/json"})

    tracks = {t.label + str(t.track_id): t for t in Track.objects.filter(job_id=job_id)}
    person_ids = sorted(t.track_id for t in tracks.values() if t.label == "person")
    bus_id = next(t.track_id for t in tracks.values() if t.label == "bus")
    before = _membership(job_id)

    answer = post("confirm", person_ids[0])
    assert answer.status_code == 200, answer.json()
    boxes = Detection.objects.filter(job_id=job_id, track_id=person_ids[0])
    assert answer.json()["boxes"] == boxes.count()
    assert set(boxes.values_list("review_status", flat=True)) == {"confirmed"}
    events = ReviewEvent.objects.filter(job_id=job_id, action="confirm")
    assert events.count() == boxes.count()  # each box its own record
    assert {e.details["track_id"] for e in events} == {person_ids[0]}
    assert post("relabel", bus_id, label="truck").status_code == 200
    assert set(Detection.objects.filter(job_id=job_id, track_id=bus_id).values_list(
        "review_label", flat=True)) == {"truck"}
    assert post("relabel", bus_id, label="no-such-class").status_code == 400

    # Split the second person at the middle of its track, then merge the halves back.
    second = Track.objects.get(job_id=job_id, track_id=person_ids[1])
    middle = (second.first_frame + second.last_frame) // 2
    split = post("split", person_ids[1], frame_index=middle)
    assert split.status_code == 201, split.json()
    new_id = split.json()["track_id"]
    assert new_id == 4 and split.json()["first_frame"] >= middle
    assert Track.objects.get(job_id=job_id, track_id=person_ids[1]).last_frame < middle
    assert api.get(job["status_url"]).json()["tracking"]["tracks"] == 4
    assert post("split", new_id, frame_index=0).status_code == 400
    merged = post("merge", new_id, into=person_ids[1])
    assert merged.status_code == 200, merged.json()
    assert merged.json()["frames"] == second.frames
    assert _membership(job_id) == before
    overlap = post("merge", person_ids[0], into=person_ids[1])
    assert overlap.status_code == 409 and overlap.json()["error"]["code"] == "tracks_overlap"
    assert post("merge", bus_id, into=person_ids[0]).status_code == 400  # another label
    assert post("merge", 99, into=person_ids[0]).status_code == 404
    assert _membership(job_id) == before

    post("confirm", person_ids[1])
    response = client.get(reverse("admin:jobs_job_export", args=[job_id, "coco"]))
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    coco = json.loads(archive.read("annotations.json"))
    exported = {a["attributes"]["track_id"] for a in coco["annotations"]}
    assert exported == {person_ids[0], person_ids[1], bus_id}
    gt = tmp_path / "gt.txt"
    gt.write_bytes(archive.read(f"mot/{job_id}/gt/gt.txt"))
    loaded = mm.io.loadtxt(str(gt), fmt="mot15-2D")
    reviewed = Detection.objects.filter(job_id=job_id, track_id__isnull=False,
                                        review_status__in=("confirmed", "relabelled"))
    assert len(loaded) == reviewed.count() == len(coco["annotations"])
    assert sorted(loaded.index.get_level_values("Id").unique()) == sorted(exported)
    first = reviewed.order_by("frame_index", "track_id").first()
    row = loaded.loc[(first.frame_index + 1, first.track_id)]
    assert (round(row["X"], 2), round(row["Width"], 2)) == (round(first.x1, 2),
                                                            round(first.x2 - first.x1, 2))
    assert "frameRate=15" in archive.read(f"mot/{job_id}/seqinfo.ini").decode()
