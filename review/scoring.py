"""Scoring models on the reviewed data, where models are loaded: a worker (the task, through
each model's batcher) or ``manage.py evaluate --reviewed`` (in its own process).

The ground truth is the reviewed set the COCO export holds (``services.reviewed_dataset``:
confirmed, relabelled and added boxes of the jobs marked reviewed); each model runs on
every image of it with darknet's validation protocol, and ``engine.scoring`` scores it.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Sequence

import numpy as np
from django.db.models import F
from django.utils import timezone

from engine import decode_image
from engine.evaluate import PROTOCOL
from engine.scoring import score
from jobs import catalog
from jobs.inference import batcher_for, get_detector, weights_sha256
from jobs.models import Job
from review import services
from review.models import ModelScoring

logger = logging.getLogger(__name__)

CHUNK = 4  # images per request to the inference thread, and per progress update
DEFAULT_THRESHOLD = 0.25  # each model's default min_confidence: the API's


def reviewed_jobs() -> list[Job]:
    """The jobs marked reviewed, oldest first (their reviewed boxes are the truth)."""
    return list(Job.objects.filter(review_mark__isnull=False, status=Job.Status.SUCCEEDED)
                .exclude(input_file="").order_by("created_at"))


def _pixels(entry: services.DatasetImage) -> np.ndarray:
    """The image as the COCO export holds it (a video frame as its JPEG there): scores
    here are what the export would give."""
    return decode_image(entry.data())


Detect = Callable[[list[np.ndarray]], list]


def _detections(entries: list[services.DatasetImage], detect: Detect, names: list[str],
                ran: Callable[[int], None]) -> list[dict]:
    """The model's detections on every image, as engine.scoring takes them; ``ran`` is
    told each chunk's size."""
    detections: list[dict] = []
    for start in range(0, len(entries), CHUNK):
        chunk = entries[start:start + CHUNK]
        found = detect([_pixels(entry) for entry in chunk])
        for entry, boxes in zip(chunk, found, strict=True):
            detections.extend(
                {"image_id": entry.image_id, "label": names[d.class_id],
                 "bbox": [d.x1, d.y1, d.x2 - d.x1, d.y2 - d.y1], "score": d.confidence}
                for d in boxes)
        ran(len(chunk))
    return detections


def score_models(refs: Sequence[str], *, in_worker: bool = False,
                 progress: Callable[[int, int], None] | None = None) -> dict:
    """Each model's scores on the reviewed set, side by side; ``progress`` is told how
    many images were run so far and how many there are to run (all models together),
    first before any runs."""
    dataset, entries = services.reviewed_dataset(reviewed_jobs())
    if not entries:
        raise ValueError("nothing is reviewed yet: mark jobs reviewed in the dashboard first")
    choices = [catalog.resolve(ref) for ref in refs]
    done, total = [0], len(entries) * len(choices)

    def ran(count: int) -> None:
        done[0] += count
        if progress is not None:
            progress(done[0], total)

    if progress is not None:
        progress(0, total)

    scored = []
    for choice in choices:
        if in_worker:
            with batcher_for(choice.ref) as batcher:
                detector = batcher.detector()
                options = [detector.options(**PROTOCOL)] * CHUNK
                detections = _detections(entries, lambda images, b=batcher, o=options: [
                    r.detections for r in b.submit_many(images, o[:len(images)],
                                                        bulk=True).result()],
                    detector.names, ran)
        else:
            detector = get_detector(model=choice.ref)
            detections = _detections(
                entries, lambda images, d=detector: d.detect(images, **PROTOCOL),
                detector.names, ran)
        result = score(dataset, detections, model_classes=detector.names,
                       threshold=DEFAULT_THRESHOLD)
        scored.append({"model": choice.ref, "name": choice.name, "version": choice.version,
                       "weights_sha256": weights_sha256(detector), "runtime": detector.runtime,
                       "precision": detector.precision, **result})
    videos = {entry.job.pk for entry in entries if entry.job.kind == Job.Kind.VIDEO}
    return {"protocol": PROTOCOL, "threshold": DEFAULT_THRESHOLD,
            "dataset": {"images": len(entries), "jobs": len({e.job.pk for e in entries}),
                        "video_frames": sum(1 for e in entries
                                            if e.job.kind == Job.Kind.VIDEO),
                        "videos": len(videos),
                        "ground_truth_boxes": len(dataset["annotations"]),
                        "classes": sorted({c["name"] for c in dataset["categories"]
                                           if any(a["category_id"] == c["id"]
                                                  for a in dataset["annotations"])})},
            "models": scored}


def run_scoring(scoring_id: str, *, in_worker: bool = True,
                progress: Callable[[int, int], None] | None = None) -> None:
    """Run a queued scoring to its end (a finished one is left alone): the task's work,
    and the command's (``in_worker=False``: the models load in its process)."""
    started = ModelScoring.objects.filter(
        pk=scoring_id, status__in=(ModelScoring.Status.QUEUED, ModelScoring.Status.RUNNING),
    ).update(status=ModelScoring.Status.RUNNING, started_at=timezone.now(), images_done=0,
             worker=socket.gethostname())
    if not started:
        return
    scoring = ModelScoring.objects.get(pk=scoring_id)

    def ran(done: int, total: int) -> None:
        ModelScoring.objects.filter(pk=scoring_id).update(images_done=done, images_total=total)
        if progress is not None:
            progress(done, total)

    try:
        result = score_models(scoring.model_refs, in_worker=in_worker, progress=ran)
    except Exception as exc:  # user data (a missing file, a model gone): the run says so
        logger.exception("scoring %s failed", scoring_id)
        ModelScoring.objects.filter(pk=scoring_id).update(
            status=ModelScoring.Status.FAILED, error=f"{type(exc).__name__}: {exc}"[:2000],
            finished_at=timezone.now())
        return
    ModelScoring.objects.filter(pk=scoring_id).update(
        status=ModelScoring.Status.SUCCEEDED, result=result, finished_at=timezone.now(),
        images_done=F("images_total"))


def table(result: dict) -> list[str]:
    """The side-by-side table, as text lines (the command prints it)."""
    models = result["models"]
    rows = [("", [m["model"] for m in models]),
            ("runtime / precision", [f"{m['runtime']} {m['precision']}" for m in models]),
            ("images scored", [str(m["images"]) for m in models]),
            ("mAP@0.5", [f"{100 * m['map50']:.2f}" for m in models]),
            ("mAP@0.5:0.95", [f"{100 * m['map50_95']:.2f}" for m in models]),
            ("mAP@0.5, shared classes", [f"{100 * m['shared_map50']:.2f}" for m in models]),
            (f"precision @ {result['threshold']}", [_percent(m["precision"]) for m in models]),
            (f"recall @ {result['threshold']}", [_percent(m["recall"]) for m in models])]
    classes = result["dataset"]["classes"]
    for name in classes:
        rows.append((f"AP@0.5 {name}", [_class_ap(m, name) for m in models]))
    rows.append(("classes it lacks", [", ".join(m["classes_unknown_to_model"]) or "-"
                                      for m in models]))
    first = max(len(label) for label, _ in rows)
    widths = [max(len(row[1][i]) for row in rows) for i in range(len(models))]
    return [f"{label:<{first}}  " + "  ".join(f"{v:>{w}}" for v, w in zip(values, widths,
                                                                          strict=True))
            for label, values in rows]


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _class_ap(model: dict, name: str) -> str:
    row = next((r for r in model["per_class"] if r["class"] == name), None)
    if row is None:
        return "-"
    return f"{100 * row['ap50']:.2f}" + ("" if row["known_to_model"] else " (unknown)")
