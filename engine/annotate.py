"""Drawing detections onto images (for --annotate, the admin and annotated videos)."""

from __future__ import annotations

import colorsys
from collections.abc import Iterable

import cv2
import numpy as np

from .types import Detection


def label_colour(class_id: int) -> tuple[int, int, int]:
    """A stable, well-separated RGB colour per class (golden-ratio hue steps)."""
    hue = (class_id * 0.618033988749895) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(red * 255), int(green * 255), int(blue * 255)


def draw_detections(image: np.ndarray, detections: Iterable[Detection]) -> np.ndarray:
    """Return a copy of an (H, W, 3) RGB image with boxes, labels and confidences drawn.

    A box that carries several classes (darknet may give one box more than one) is
    drawn once, with every label on it.
    """
    canvas = np.ascontiguousarray(image).copy()
    height, width = canvas.shape[:2]
    thickness = max(1, round(min(height, width) / 300))
    font_scale = max(0.4, min(height, width) / 1000)
    boxes: dict[tuple[int, int, int, int], list[Detection]] = {}
    for det in detections:
        corners = tuple(round(v) for v in (det.x1, det.y1, det.x2, det.y2))
        boxes.setdefault(corners, []).append(det)
    for (x1, y1, x2, y2), group in boxes.items():
        colour = label_colour(group[0].class_id)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thickness)
        text = " / ".join(f"{det.label} {det.confidence:.2f}" for det in group)
        (text_w, text_h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX,
                                                     font_scale, thickness)
        text_top = max(0, y1 - text_h - baseline - 2)
        cv2.rectangle(canvas, (x1, text_top), (x1 + text_w + 2, text_top + text_h + baseline + 2),
                      colour, -1)
        cv2.putText(canvas, text, (x1 + 1, text_top + text_h + 1), cv2.FONT_HERSHEY_SIMPLEX,
                    font_scale, (0, 0, 0), thickness, cv2.LINE_AA)
    return canvas
