"""Review services: confirm, reject, relabel (a box, or every box of a track), merge and
split tracks, add boxes, mark reviewed, re-run, export.

The model's output is never changed: a review writes the review fields beside a
detection (status, label, who, when) and appends a ReviewEvent; boxes the model missed
are AddedBox rows. Tracks are the tracker's grouping of those boxes: merging two (an id
switch) or splitting one changes which track boxes belong to, each change in the review
history. An export takes exactly the reviewed boxes: confirmed and relabelled detections
and added boxes, not rejected or unreviewed ones, with their (reviewed) track ids.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath

import cv2
from django.core.files.base import File
from django.core.files.storage import default_storage
from django.db import models, transaction
from django.utils import timezone

from core.errors import ApiError
from core.storage import local_or_url
from jobs import catalog, dispatch
from jobs.catalog import class_names, job_ref
from jobs.models import Detection, Job, Track, Video
from jobs.selectors import selection_for
from jobs.services import MEDIA_FIELDS, VIDEO_FACTS, job_create, tracks_refresh
from jobs.uploads import stored_name
from review.models import AddedBox, ModelScoring, ReviewEvent, ReviewMark
from videos.pipeline import read_frame
from videos.services import queue_parts

REVIEW_ACTIONS = ("confirm", "reject", "relabel", "reset")


def _class_id(job: Job, label: str) -> int:
    names = class_names(job_ref(job))
    if label not in names:
        raise ApiError("invalid_parameters", f"unknown label {label!r}",
                       details={"label": "one of the model's classes"})
    return names.index(label)


def _review_fields(job: Job, user, action: str, label: str | None) -> dict:
    """The review fields an action writes on a detection."""
    if action not in REVIEW_ACTIONS:
        raise ApiError("invalid_parameters", f"unknown review action {action!r}")
    review_label, review_class = "", None
    status = {"confirm": Detection.Review.CONFIRMED, "reject": Detection.Review.REJECTED,
              "relabel": Detection.Review.RELABELLED,
              "reset": Detection.Review.UNREVIEWED}[action]
    if action == "relabel":
        if not label:
            raise ApiError("invalid_parameters", "relabel needs a label")
        review_class = _class_id(job, label)
        review_label = label
    reviewer = user if action != "reset" else None
    return {"review_status": status, "review_label": review_label,
            "review_class_id": review_class, "reviewed_by": reviewer,
            "reviewed_at": timezone.now() if reviewer else None}


def _event(detection: Detection, fields: dict, action: str, user, **details) -> ReviewEvent:
    before = {"status": detection.review_status, "label": detection.review_label or None}
    after = {"status": fields["review_status"], "label": fields["review_label"] or None}
    return ReviewEvent(job_id=detection.job_id, detection=detection, action=action, user=user,
                       details={"before": before, "after": after, **details})


@transaction.atomic
def detection_review(*, detection: Detection, user, action: str,
                     label: str | None = None) -> Detection:
    """Set a detection's review state; the original label, score and box stay as they are."""
    fields = _review_fields(detection.job, user, action, label)
    Detection.objects.filter(pk=detection.pk).update(**fields)
    _event(detection, fields, action, user).save()
    detection.refresh_from_db()
    return detection


def _track_boxes(job: Job, track_id: int):
    boxes = Detection.objects.filter(job=job, track_id=track_id)
    if not boxes.exists():
        raise ApiError("not_found", f"the job has no track {track_id}", status_code=404)
    return boxes


@transaction.atomic
def track_review(*, job: Job, track_id: int, user, action: str,
                 label: str | None = None) -> int:
    """Confirm, reject, relabel or reset every box of a track: each box gets the review
    (and its own history entry) as if reviewed alone. Returns the boxes reviewed."""
    fields = _review_fields(job, user, action, label)
    boxes = list(_track_boxes(job, track_id).select_for_update())
    ReviewEvent.objects.bulk_create([_event(box, fields, action, user, track_id=track_id)
                                     for box in boxes], batch_size=1000)
    Detection.objects.filter(pk__in=[box.pk for box in boxes]).update(**fields)
    return len(boxes)


def _tracks_changed(job: Job, track_ids: list[int]) -> None:
    tracks_refresh(job=job, track_ids=track_ids)
    Video.objects.filter(job=job).update(tracks=Track.objects.filter(job=job).count())


@transaction.atomic
def tracks_merge(*, job: Job, track_id: int, into: int, user) -> Track:
    """Give every box of ``track_id`` to track ``into`` (the tracker split one object in
    two: an id switch). Refused when both have a box in one frame, or their labels
    differ (relabel one first)."""
    if track_id == into:
        raise ApiError("invalid_parameters", "a track cannot be merged into itself",
                       details={"into": "another track of the job"})
    moved, kept = _track_boxes(job, track_id), _track_boxes(job, into)
    labels = set(moved.values_list("label", flat=True)) | set(
        kept.values_list("label", flat=True))
    if len(labels) > 1:
        raise ApiError("invalid_parameters", f"tracks {track_id} and {into} are of different "
                       f"labels ({', '.join(sorted(labels))}): relabel one first",
                       details={"into": "a track of the same label"})
    both = sorted(set(moved.values_list("frame_index", flat=True))
                  & set(kept.values_list("frame_index", flat=True)))
    if both:
        raise ApiError("tracks_overlap", f"tracks {track_id} and {into} both have a box in "
                       f"{len(both)} frames (first: {both[0]}): one object has one box a "
                       "frame", status_code=409, details={"frames": both[:20]})
    count = moved.update(track_id=into)
    ReviewEvent.objects.create(job=job, action=ReviewEvent.Action.MERGE_TRACKS, user=user,
                               details={"track_id": track_id, "into": into, "boxes": count})
    _tracks_changed(job, [track_id, into])
    return Track.objects.get(job=job, track_id=into)


@transaction.atomic
def track_split(*, job: Job, track_id: int, frame_index: int, user) -> Track:
    """Give the boxes of a track from ``frame_index`` on to a new track (the tracker took
    two objects for one); returns the new track."""
    boxes = _track_boxes(job, track_id)
    later = boxes.filter(frame_index__gte=frame_index)
    if not later.exists() or not boxes.filter(frame_index__lt=frame_index).exists():
        raise ApiError("invalid_parameters", f"frame {frame_index} does not split track "
                       f"{track_id}: it must have boxes before and from that frame",
                       details={"frame_index": "after the track's first frame, at or before "
                                               "its last"})
    Video.objects.select_for_update().filter(job=job).first()  # one new id at a time
    new_id = (Detection.objects.filter(job=job).aggregate(
        top=models.Max("track_id"))["top"] or 0) + 1
    count = later.update(track_id=new_id)
    ReviewEvent.objects.create(job=job, action=ReviewEvent.Action.SPLIT_TRACK, user=user,
                               details={"track_id": track_id, "frame_index": frame_index,
                                        "new_track_id": new_id, "boxes": count})
    _tracks_changed(job, [track_id, new_id])
    return Track.objects.get(job=job, track_id=new_id)


@transaction.atomic
def box_add(*, job: Job, user, label: str, x1: float, y1: float, x2: float, y2: float,
            frame_index: int = 0) -> AddedBox:
    """Add a box the model missed (in image pixels; clipped to the frame)."""
    width, height = job.width or 0, job.height or 0
    x1, x2 = sorted((max(0.0, min(x1, width)), max(0.0, min(x2, width))))
    y1, y2 = sorted((max(0.0, min(y1, height)), max(0.0, min(y2, height))))
    if x2 - x1 < 1 or y2 - y1 < 1:
        raise ApiError("invalid_parameters", "the box is empty (or outside the image)")
    timestamp = 0
    if job.kind == Job.Kind.VIDEO:
        frames, fps = job.video.frame_count, job.video.fps
        if frames and not 0 <= frame_index < frames:
            raise ApiError("invalid_parameters", f"frame {frame_index} is not in the video")
        timestamp = round(frame_index * 1000 / fps) if fps else 0
    box = AddedBox.objects.create(job=job, frame_index=frame_index, timestamp_ms=timestamp,
                                  class_id=_class_id(job, label), label=label, x1=x1, y1=y1,
                                  x2=x2, y2=y2, created_by=user)
    ReviewEvent.objects.create(job=job, added_box=box, action=ReviewEvent.Action.ADD_BOX,
                               user=user, details={"label": label, "frame_index": frame_index,
                                                   "box": [x1, y1, x2, y2]})
    return box


@transaction.atomic
def box_remove(*, box: AddedBox, user) -> None:
    AddedBox.objects.filter(pk=box.pk, removed_at__isnull=True).update(removed_at=timezone.now())
    ReviewEvent.objects.create(job_id=box.job_id, added_box=box,
                               action=ReviewEvent.Action.REMOVE_BOX, user=user,
                               details={"label": box.label})


@transaction.atomic
def job_mark_reviewed(*, job: Job, user) -> ReviewMark:
    mark, _ = ReviewMark.objects.update_or_create(
        job=job, defaults={"reviewed_by": user, "reviewed_at": timezone.now()})
    ReviewEvent.objects.create(job=job, action=ReviewEvent.Action.MARK_REVIEWED, user=user)
    return mark


def job_rerun(*, job: Job, user, model_name: str | None = None,
              min_confidence: float | None = None, iou_threshold: float | None = None) -> Job:
    """A new job on the same input with other settings, linked to this one."""
    if not job.input_file:
        raise ApiError("no_input", "the job's input file is gone")
    params = dict(job.params)
    if min_confidence is not None:
        params["min_confidence"] = min_confidence
    if iou_threshold is not None:
        params["iou_threshold"] = iou_threshold
    # The same version as the job's unless another model is named (a 400 if unknown).
    model = catalog.resolve(model_name or job_ref(job))
    extension = PurePosixPath(job.input_file.name).suffix.lstrip(".")
    with default_storage.open(job.input_file.name, "rb") as stream:
        name = default_storage.save(stored_name(f"{job.kind}s", extension), File(stream))
    with transaction.atomic():
        video = None
        if job.kind == Job.Kind.VIDEO:
            video = {field: getattr(job.video, field) for field in VIDEO_FACTS}
            video["frames_total"] = selection_for(job).count(job.video.frame_count or 0)
        rerun = job_create(
            kind=job.kind, owner=job.owner, params=params, model_name=model.name,
            model_version=model.version, input_file=name,
            parent=job, video=video, **{field: getattr(job, field) for field in MEDIA_FIELDS})
        ReviewEvent.objects.create(job=job, action=ReviewEvent.Action.RERUN, user=user,
                                   details={"rerun": str(rerun.pk), "model": model.ref,
                                            "params": params})
        if job.kind == Job.Kind.IMAGE:
            # A broker that cannot be reached leaves it to the watchdog (its lease lapses).
            dispatch.send_on_commit(dispatch.DETECT_IMAGE, [(str(rerun.pk),)])
        else:
            queue_parts(rerun, selection_for(rerun))
    return rerun


# --- Export ------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReviewedBox:
    frame_index: int
    class_id: int
    label: str
    x1: float
    y1: float
    x2: float
    y2: float
    track_id: int | None = None


def reviewed_boxes(job: Job) -> list[ReviewedBox]:
    """Confirmed and relabelled detections (with the reviewer's label) and added boxes."""
    boxes = []
    kept = (Detection.objects.filter(job=job, review_status__in=(
        Detection.Review.CONFIRMED, Detection.Review.RELABELLED)).order_by("frame_index", "id"))
    for d in kept:
        class_id, label = d.class_id, d.label
        if d.review_status == Detection.Review.RELABELLED and d.review_class_id is not None:
            class_id, label = d.review_class_id, d.review_label
        boxes.append(ReviewedBox(d.frame_index, class_id, label, d.x1, d.y1, d.x2, d.y2,
                                 d.track_id))
    for b in AddedBox.objects.filter(job=job, removed_at__isnull=True):
        boxes.append(ReviewedBox(b.frame_index, b.class_id, b.label, b.x1, b.y1, b.x2, b.y2))
    return boxes


def frame_jpeg(job: Job, frame_index: int) -> bytes:
    """A video job's source frame, as a JPEG (the dashboard shows it, exports hold it)."""
    with local_or_url(job.input_file.name) as source:
        frame = read_frame(source, frame_index)
    if frame is None:
        raise ApiError("frame_unreadable", f"frame {frame_index} of job {job.pk} cannot be read")
    return cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                        [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()


@dataclass(frozen=True)
class DatasetImage:
    """One image of the reviewed set: a job's image, or a frame of a video job."""

    image_id: int
    job: Job
    frame_index: int
    stem: str
    extension: str
    boxes: tuple[ReviewedBox, ...]

    @property
    def file_name(self) -> str:
        return f"{self.stem}{self.extension}"

    def data(self) -> bytes:
        """The image file's bytes (a video frame as a JPEG)."""
        if self.job.kind == Job.Kind.IMAGE:
            with default_storage.open(self.job.input_file.name, "rb") as stream:
                return stream.read()
        return frame_jpeg(self.job, self.frame_index)


def reviewed_dataset(jobs: Iterable[Job]) -> tuple[dict, list[DatasetImage]]:
    """The jobs' reviewed boxes as a COCO dataset (images, annotations, categories by
    name: the first job's model's classes, then any other label reviewed), with what
    each image is: a reviewed image job's image (with its boxes, or none: still data),
    and each frame of a video job that has reviewed boxes."""
    jobs = [job for job in jobs if job.input_file]
    names = list(class_names(job_ref(jobs[0]))) if jobs else []
    boxes_of = {job.pk: reviewed_boxes(job) for job in jobs}
    for boxes in boxes_of.values():
        names += [box.label for box in boxes if box.label not in names]
    category = {name: index + 1 for index, name in enumerate(names)}
    coco: dict = {"info": {"description": "PMR reviewed detections",
                           "date_created": timezone.now().isoformat()},
                  "images": [], "annotations": [],
                  "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)]}
    entries = []
    for job in jobs:
        frames: dict[int, list[ReviewedBox]] = {}
        for box in boxes_of[job.pk]:
            frames.setdefault(box.frame_index, []).append(box)
        if job.kind == Job.Kind.IMAGE:
            frames.setdefault(0, [])  # a reviewed image with nothing in it is still data
        for frame_index, frame_boxes in sorted(frames.items()):
            if job.kind == Job.Kind.IMAGE:
                extension, stem = PurePosixPath(job.input_file.name).suffix, str(job.pk)
            else:
                extension, stem = ".jpg", f"{job.pk}_frame{frame_index:07d}"
            entry = DatasetImage(len(coco["images"]) + 1, job, frame_index, stem, extension,
                                 tuple(frame_boxes))
            entries.append(entry)
            coco["images"].append({"id": entry.image_id, "file_name": entry.file_name,
                                   "width": job.width, "height": job.height,
                                   "pmr_job": str(job.pk), "frame_index": frame_index})
            for box in frame_boxes:
                width, height = box.x2 - box.x1, box.y2 - box.y1
                annotation = {
                    "id": len(coco["annotations"]) + 1, "image_id": entry.image_id,
                    "category_id": category[box.label], "iscrowd": 0,
                    "bbox": [round(box.x1, 2), round(box.y1, 2), round(width, 2),
                             round(height, 2)], "area": round(width * height, 2)}
                if box.track_id is not None:  # as CVAT writes a track's boxes
                    annotation["attributes"] = {"track_id": box.track_id}
                coco["annotations"].append(annotation)
    return coco, entries


def mot_ground_truth(job: Job, boxes: Iterable[ReviewedBox], categories: list[str]) -> str:
    """A video job's reviewed, tracked boxes in the MOTChallenge ground-truth format:
    ``frame,id,left,top,width,height,1,class,1`` a line, counted from 1 as MOTChallenge
    counts (frame: the source frame's index + 1; left, top: pixels from 1; class: the
    export's category, from 1)."""
    lines = []
    for box in sorted((b for b in boxes if b.track_id is not None),
                      key=lambda b: (b.frame_index, b.track_id)):
        lines.append(f"{box.frame_index + 1},{box.track_id},{box.x1 + 1:.2f},{box.y1 + 1:.2f},"
                     f"{box.x2 - box.x1:.2f},{box.y2 - box.y1:.2f},1,"
                     f"{categories.index(box.label) + 1},1")
    return "\n".join(lines) + ("\n" if lines else "")


def _seqinfo(job: Job) -> str:
    video = job.video
    return ("[Sequence]\n"
            f"name={job.pk}\nimDir=img1\nframeRate={video.fps or 0:g}\n"
            f"seqLength={video.frame_count or 0}\nimWidth={job.width}\nimHeight={job.height}\n"
            "imExt=.jpg\n")


def export_dataset(*, jobs: Iterable[Job], fmt: str) -> bytes:
    """A zip with the jobs' images (video frames that have reviewed boxes) and their
    reviewed boxes, as COCO (annotations.json) or YOLO (labels/*.txt, classes.txt);
    beside them, for each tracked video job, its reviewed tracks in the MOTChallenge
    format (mot/<job>/gt/gt.txt and seqinfo.ini)."""
    if fmt not in ("coco", "yolo"):
        raise ValueError(fmt)
    coco, entries = reviewed_dataset(jobs)
    names = [c["name"] for c in coco["categories"]]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for entry in entries:
            archive.writestr(f"images/{entry.file_name}", entry.data())
            if fmt == "yolo":
                image_width, image_height = entry.job.width or 1, entry.job.height or 1
                lines = []
                for box in entry.boxes:
                    width, height = box.x2 - box.x1, box.y2 - box.y1
                    lines.append(f"{names.index(box.label)} "
                                 f"{(box.x1 + width / 2) / image_width:.6f} "
                                 f"{(box.y1 + height / 2) / image_height:.6f} "
                                 f"{width / image_width:.6f} {height / image_height:.6f}")
                archive.writestr(f"labels/{entry.stem}.txt",
                                 "\n".join(lines) + ("\n" if lines else ""))
        for job in {entry.job.pk: entry.job for entry in entries}.values():
            if job.kind == Job.Kind.VIDEO and job.video.tracks is not None:
                boxes = [box for entry in entries if entry.job.pk == job.pk
                         for box in entry.boxes]
                archive.writestr(f"mot/{job.pk}/gt/gt.txt",
                                 mot_ground_truth(job, boxes, names))
                archive.writestr(f"mot/{job.pk}/seqinfo.ini", _seqinfo(job))
        if fmt == "coco":
            archive.writestr("annotations.json", json.dumps(coco, indent=1))
        else:
            archive.writestr("classes.txt", "\n".join(names) + "\n")
            archive.writestr("data.yaml", "path: .\ntrain: images\nval: images\n"
                             f"nc: {len(names)}\nnames: {json.dumps(names)}\n")
    return buffer.getvalue()


# --- Scoring models on the reviewed data -------------------------------------------------

def scoring_start(*, user, refs: list[str], send: bool = True) -> ModelScoring:
    """Queue a scoring of these models (NAME or NAME@VERSION; a 400 for an unknown one)
    on the reviewed data, for a worker to run (``send=False``: the caller runs it)."""
    refs = [ref.strip() for ref in refs if ref.strip()]
    if not refs:
        raise ApiError("invalid_parameters", "choose at least one model to score",
                       details={"models": "one or more of GET /api/models"})
    chosen = list(dict.fromkeys(catalog.resolve(ref).ref for ref in refs))
    if not Job.objects.filter(review_mark__isnull=False).exists():
        raise ApiError("nothing_reviewed", "nothing is reviewed yet: mark jobs reviewed "
                       "first (their reviewed boxes are the ground truth)")
    scoring = ModelScoring.objects.create(model_refs=chosen, created_by=user)
    if send:
        dispatch.send_on_commit(dispatch.SCORE_MODELS, [(str(scoring.pk),)])
    return scoring
