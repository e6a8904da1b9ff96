"""A model's scores against a COCO ground truth (pycocotools): mAP@0.5 and mAP@0.5:0.95,
per-class AP, precision and recall at one confidence threshold. Plain Python and NumPy
(no model is loaded here): the caller gives the ground truth and the detections.

Classes are matched by name. A ground-truth class the model does not have is reported
(``classes_unknown_to_model``) and scores an AP of 0 in the all-classes mAP; the
``shared`` mAP averages over the classes both have. Detections of a class the ground
truth does not have are counted (``detections_outside_ground_truth``), not scored.
"""

from __future__ import annotations

import contextlib
import io
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

IOU_FOR_COUNTS = 0.5  # a detection is a true positive at IoU >= 0.5 (as mAP@0.5)


def _ground_truth(dataset: dict) -> COCO:
    gt = COCO()
    gt.dataset = {"images": dataset["images"], "annotations": dataset["annotations"],
                  "categories": dataset["categories"]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def _evaluate(gt: COCO, results: list[dict], image_ids: list[int],
              category_ids: list[int]) -> COCOeval | None:
    if not results or not category_ids:
        return None
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
        coco_eval = COCOeval(gt, dt, "bbox")
        coco_eval.params.imgIds = image_ids
        coco_eval.params.catIds = category_ids
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval


def _ap(precision: np.ndarray) -> float:
    """Mean of the valid (> -1) entries of a slice of COCOeval's precision array."""
    valid = precision[precision > -1]
    return float(valid.mean()) if valid.size else 0.0


def score(dataset: dict, detections: Iterable[dict], *, model_classes: Sequence[str],
          threshold: float) -> dict:
    """Score ``detections`` ({image_id, label, bbox [x, y, w, h], score}) against the COCO
    ``dataset`` (images, annotations, categories named). ``model_classes``: the model's
    class names; ``threshold``: the confidence for precision and recall."""
    gt = _ground_truth(dataset)
    by_name = {c["name"]: c["id"] for c in dataset["categories"]}
    names = {c["id"]: c["name"] for c in dataset["categories"]}
    image_ids = [image["id"] for image in dataset["images"]]
    present = sorted({a["category_id"] for a in dataset["annotations"]})
    known = set(model_classes)
    shared = [c for c in present if names[c] in known]
    outside: Counter[str] = Counter()
    results = []
    for d in detections:
        category = by_name.get(d["label"])
        if category is None:
            outside[d["label"]] += 1
            continue
        results.append({"image_id": d["image_id"], "category_id": category,
                        "bbox": [float(v) for v in d["bbox"]], "score": float(d["score"])})

    every = _evaluate(gt, results, image_ids, present)
    both = _evaluate(gt, results, image_ids, shared)
    per_class = []
    for index, category in enumerate(present):
        row = {"class": names[category], "known_to_model": names[category] in known,
               "ground_truth": sum(1 for a in dataset["annotations"]
                                   if a["category_id"] == category),
               "ap50": 0.0, "ap50_95": 0.0}
        if every is not None:
            precision = every.eval["precision"]  # [iou, recall, class, area, max dets]
            row["ap50"] = _ap(precision[0, :, index, 0, -1])
            row["ap50_95"] = _ap(precision[:, :, index, 0, -1])
        per_class.append(row)
    true_positives, false_positives, misses = _counts(every, threshold, gt)
    found = true_positives + false_positives
    truths = true_positives + misses
    return {
        "images": len(image_ids),
        "ground_truth_boxes": len(dataset["annotations"]),
        "detections": len(results),
        "map50": float(every.stats[1]) if every is not None else 0.0,
        "map50_95": float(every.stats[0]) if every is not None else 0.0,
        "shared_map50": float(both.stats[1]) if both is not None else 0.0,
        "shared_map50_95": float(both.stats[0]) if both is not None else 0.0,
        "threshold": threshold,
        "precision": true_positives / found if found else None,
        "recall": true_positives / truths if truths else None,
        "true_positives": true_positives, "false_positives": false_positives,
        "missed": misses,
        "per_class": per_class,
        "classes_unknown_to_model": [names[c] for c in present if names[c] not in known],
        "detections_outside_ground_truth": dict(sorted(outside.items())),
    }


def _counts(coco_eval: COCOeval | None, threshold: float, gt: COCO) -> tuple[int, int, int]:
    """True positives, false positives and missed ground-truth boxes at IoU 0.5 among the
    detections scoring at least ``threshold`` (COCOeval matches greedily by score, so
    keeping the matches of the detections above a threshold is matching those alone)."""
    if coco_eval is None:
        return 0, 0, sum(1 for a in gt.dataset["annotations"] if not a.get("iscrowd"))
    t = int(np.argmin(np.abs(coco_eval.params.iouThrs - IOU_FOR_COUNTS)))
    all_areas = coco_eval.params.areaRng[0]
    true_positives = false_positives = ground_truth = 0
    for image in coco_eval.evalImgs:
        if image is None or image["aRng"] != all_areas:
            continue
        scores = np.asarray(image["dtScores"])
        keep = scores >= threshold
        matched = np.asarray(image["dtMatches"])[t] > 0 if scores.size else np.zeros(0, bool)
        ignored = np.asarray(image["dtIgnore"])[t].astype(bool) if scores.size else matched
        true_positives += int(np.sum(keep & matched & ~ignored))
        false_positives += int(np.sum(keep & ~matched & ~ignored))
        ground_truth += int(np.sum(~np.asarray(image["gtIgnore"], bool)))
    return true_positives, false_positives, ground_truth - true_positives
