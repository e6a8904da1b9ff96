"""What the engine takes and gives, without PyTorch: detections, options, class names.

The web tier validates requests and serves results with these; only the workers load
the network (``detector``), and with it PyTorch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PRECISIONS = ("fp32", "bf16", "fp16", "int8")


@dataclass(frozen=True)
class Detection:
    class_id: int
    label: str
    confidence: float
    x1: float
    y1: float
    x2: float
    y2: float

    def as_dict(self) -> dict:
        return {"label": self.label, "class_id": self.class_id,
                "confidence": round(self.confidence, 6),
                "box": {"x1": round(self.x1, 2), "y1": round(self.y1, 2),
                        "x2": round(self.x2, 2), "y2": round(self.y2, 2)}}


class OutOfMemory(MemoryError):
    """Even a batch of one image does not fit in the device's memory."""


@dataclass(frozen=True)
class DetectOptions:
    """Per-call detection options (see :meth:`Detector.options` to build from names)."""

    min_confidence: float = 0.25
    iou_threshold: float = 0.45
    classes: frozenset[int] | None = None  # None: every class
    max_detections: int = 100

    def __post_init__(self) -> None:
        if not 0 <= self.min_confidence < 1:
            raise ValueError("min_confidence must be in [0, 1)")
        if not 0 < self.iou_threshold <= 1:
            raise ValueError("iou_threshold must be in (0, 1]")
        if self.max_detections < 1:
            raise ValueError("max_detections must be at least 1")


def read_names(path: str | Path) -> list[str]:
    names = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    return [name for name in names if name]
