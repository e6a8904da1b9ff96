"""COCO-style evaluation (pycocotools) of a detector on a folder of labelled images.

Protocol, as darknet's ``detector valid`` + the COCO API: min_confidence 0.005, NMS
IoU 0.45, at most 100 detections per image.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from .detector import Detector
from .image import decode_image
from .labels import coco_name

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
PROTOCOL = {"min_confidence": 0.005, "iou_threshold": 0.45, "max_detections": 100}



@dataclass
class EvaluationResult:
    map50: float
    map50_95: float
    images: int
    ground_truth_boxes: int
    detections: int
    coco_stats: list[float] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"map50": self.map50, "map50_95": self.map50_95, "images": self.images,
                "ground_truth_boxes": self.ground_truth_boxes, "detections": self.detections,
                "coco_stats": self.coco_stats}


def _normalise(name: str) -> str:
    return name.lower().replace(" ", "").replace("_", "")


def category_map(names: list[str], categories: list[dict]) -> dict[int, int]:
    """Detector class id -> ground-truth category id, matched by (darknet-aliased) name."""
    by_name = {_normalise(c["name"]): c["id"] for c in categories}
    mapping = {}
    for class_id, name in enumerate(names):
        key = _normalise(coco_name(name))
        if key in by_name:
            mapping[class_id] = by_name[key]
    if not mapping:
        raise ValueError("no detector class matches a ground-truth category by name")
    return mapping


def ground_truth_from_yolo_labels(images: list[Path], labels_dir: Path,
                                  names: list[str]) -> dict:
    """A COCO ground-truth dict from YOLO txt labels (class xc yc w h, normalised)."""
    gt: dict = {"images": [], "annotations": [],
                "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)]}
    for image_id, path in enumerate(images, start=1):
        height, width = decode_image(path).shape[:2]
        gt["images"].append({"id": image_id, "file_name": path.name, "width": width,
                             "height": height})
        label_file = labels_dir / f"{path.stem}.txt"
        lines = label_file.read_text().splitlines() if label_file.exists() else []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                cls, xc, yc, w, h = line.split()[:5]
                class_id = int(cls)
                box = [float(xc) * width, float(yc) * height, float(w) * width, float(h) * height]
            except ValueError:
                raise ValueError(f"{label_file}:{number}: expected 'class xc yc w h'") from None
            if not 0 <= class_id < len(names):
                raise ValueError(f"{label_file}:{number}: class {class_id} is not one of the "
                                 f"model's {len(names)}")
            gt["annotations"].append({
                "id": len(gt["annotations"]) + 1, "image_id": image_id,
                "category_id": class_id + 1, "iscrowd": 0, "area": box[2] * box[3],
                "bbox": [box[0] - box[2] / 2, box[1] - box[3] / 2, box[2], box[3]]})
    return gt


def evaluate(detector: Detector, images_dir: str | Path, *, labels_dir: str | Path | None = None,
             coco_json: str | Path | None = None,
             progress: Callable[[Iterator, int], Iterator] | None = None,
             limit: int | None = None) -> EvaluationResult:
    """Detect on every ground-truth image (the first ``limit`` only, if given) and score
    with pycocotools."""
    images_dir = Path(images_dir)
    if (labels_dir is None) == (coco_json is None):
        raise ValueError("give exactly one of labels_dir and coco_json")
    if coco_json is not None:
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO(str(coco_json))
        mapping = category_map(detector.names, gt.dataset["categories"])
        entries = [(img["id"], images_dir / img["file_name"]) for img in gt.dataset["images"]]
    else:
        files = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        gt = COCO()
        gt.dataset = ground_truth_from_yolo_labels(files, Path(labels_dir), detector.names)
        with contextlib.redirect_stdout(io.StringIO()):
            gt.createIndex()
        mapping = {i: i + 1 for i in range(len(detector.names))}
        entries = [(img["id"], images_dir / img["file_name"]) for img in gt.dataset["images"]]

    if limit is not None:
        entries = entries[:limit]
    results = []
    batches = [entries[i:i + detector.max_batch]
               for i in range(0, len(entries), detector.max_batch)]
    iterator = progress(iter(batches), len(batches)) if progress else batches
    for batch in iterator:
        pictures = [decode_image(path) for _, path in batch]
        for (image_id, _), found in zip(batch, detector.detect(pictures, **PROTOCOL),
                                        strict=True):
            for det in found:
                if det.class_id in mapping:
                    results.append({"image_id": image_id, "category_id": mapping[det.class_id],
                                    "bbox": [det.x1, det.y1, det.x2 - det.x1, det.y2 - det.y1],
                                    "score": det.confidence})
    kept = {image_id for image_id, _ in entries}
    gt_boxes = sum(1 for box in gt.dataset["annotations"] if box["image_id"] in kept)
    if not results:
        return EvaluationResult(0.0, 0.0, len(entries), gt_boxes, 0)
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
        coco_eval = COCOeval(gt, dt, "bbox")
        coco_eval.params.imgIds = [image_id for image_id, _ in entries]
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    stats = [float(s) for s in np.asarray(coco_eval.stats)]
    return EvaluationResult(map50=stats[1], map50_95=stats[0], images=len(entries),
                            ground_truth_boxes=gt_boxes, detections=len(results),
                            coco_stats=stats)
