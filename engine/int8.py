"""An INT8 model with its accuracy held: quantize on the user's images, check mAP@0.5
against fp32 on a labelled evaluation set, and record the check beside the model.

The record (a small JSON beside the INT8 IR in the export cache, ``runtimes.
int8_record_path``) says what the model was calibrated on, how it scored against fp32
and whether it passed: mAP@0.5 no more than ``runtimes.INT8_TOLERANCE_POINTS`` (1.0)
points below fp32's, the same runtime and pipeline otherwise. ``DETECTOR_PRECISION=auto``
serves INT8 only for weights whose record passed; ``int8`` serves it whatever the record
says (the user's choice).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np

from . import runtimes
from .detector import Detector
from .evaluate import evaluate
from .runtimes.quantize import quantize


@dataclass(frozen=True)
class EvaluationSet:
    """A labelled folder: images and either a COCO JSON or YOLO txt labels."""

    images: Path
    coco_json: Path | None = None
    labels: Path | None = None
    limit: int | None = None  # the first N images only (a quick check)

    @classmethod
    def from_folder(cls, folder: str | Path, limit: int | None = None) -> EvaluationSet:
        """A folder laid out as coco128_val2017: ``images/`` and a ``*.json`` of
        COCO instances, or ``labels/``."""
        folder = Path(folder)
        images = folder / "images"
        if not images.is_dir():
            raise ValueError(f"{folder} has no images/ folder")
        found = sorted(folder.glob("*.json"))
        if found:
            return cls(images, coco_json=found[0], limit=limit)
        if (folder / "labels").is_dir():
            return cls(images, labels=folder / "labels", limit=limit)
        raise ValueError(f"{folder} has neither a COCO *.json nor a labels/ folder")


def quantize_and_check(detector: Detector, calibration: Sequence[np.ndarray], *,
                       calibration_source: str, evaluation: EvaluationSet | None,
                       cache: runtimes.ExportCache,
                       log: Callable[[str], None] = print) -> dict:
    """Quantize ``detector``'s network (an fp32 OpenVINO detector, built with ``cache``),
    check it on ``evaluation`` against ``detector`` itself, and write the record; the
    record. Without an evaluation set the model is kept, unchecked: not passed."""
    if detector.runtime != "openvino" or detector.precision != "fp32":
        raise ValueError("quantize from the fp32 OpenVINO detector")
    spec = detector.network.spec
    record_path = runtimes.int8_record_path(cache, spec)
    if record_path is None:
        raise ValueError("OpenVINO is not installed: no INT8 model can be made")
    record_path.unlink(missing_ok=True)  # the old verdict is not the new model's
    log(f"quantizing on {len(calibration)} calibration images ({calibration_source})")
    model_path = quantize(detector.network, calibration, cache=cache)
    record: dict = {
        "model": Path(spec.path).stem,
        "weights_sha256": cache.weights_sha256,
        "input_size": [spec.width, spec.height],
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "int8_model": model_path.name,
        "calibration": {"source": calibration_source, "images": len(calibration)},
        "evaluation": None,
        "tolerance_points": runtimes.INT8_TOLERANCE_POINTS,
        "passed": False,
        "versions": {package: version(package) for package in ("nncf", "openvino")},
    }
    if evaluation is not None:
        int8 = Detector(detector.network, detector.names, device="cpu", precision="int8",
                        runtime="openvino", max_batch=detector.max_batch, cache=cache)
        scores = {}
        for label, each in (("fp32", detector), ("int8", int8)):
            log(f"evaluating {label} on {evaluation.images}")
            scores[label] = evaluate(each, evaluation.images, labels_dir=evaluation.labels,
                                     coco_json=evaluation.coco_json, limit=evaluation.limit)
        fp32_map, int8_map = scores["fp32"].map50, scores["int8"].map50
        record["evaluation"] = {
            "images_dir": str(evaluation.images), "images": scores["int8"].images,
            "ground_truth": str(evaluation.coco_json or evaluation.labels),
            "fp32_map50": fp32_map, "int8_map50": int8_map,
            "fp32_map50_95": scores["fp32"].map50_95, "int8_map50_95": scores["int8"].map50_95,
        }
        record["passed"] = 100 * (fp32_map - int8_map) <= runtimes.INT8_TOLERANCE_POINTS
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    return record
