"""Drawing detections onto images (for --annotate, the admin and annotated videos)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import cv2
import numpy as np

from .types import Detection

# One colour per class, the same on every page, in the annotated videos and in the
# dashboard's script: Okabe and Ito's colour-blind-safe set, then Paul Tol's muted
# colours that stay apart from it. Class ids cycle through it; neighbouring ids (person,
# bicycle, car, motorbike, bus, train, truck in COCO) never share a colour.
PALETTE = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7",
           "#332288", "#999933", "#CC6677", "#882255", "#117733")


def label_colour(class_id: int) -> tuple[int, int, int]:
    """The class's RGB colour (PALETTE)."""
    code = PALETTE[class_id % len(PALETTE)]
    return int(code[1:3], 16), int(code[3:5], 16), int(code[5:7], 16)


def text_colour(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever contrasts more with ``rgb`` (WCAG relative luminance)."""
    def linear(channel: int) -> float:
        value = channel / 255
        return value / 12.92 if value <= 0.04045 else ((value + 0.055) / 1.055) ** 2.4
    red, green, blue = (linear(c) for c in rgb)
    luminance = 0.2126 * red + 0.7152 * green + 0.0722 * blue
    # Contrast with black (L + 0.05) / 0.05 against white's 1.05 / (L + 0.05).
    return (0, 0, 0) if (luminance + 0.05) ** 2 > 0.0525 else (255, 255, 255)


def _style(canvas: np.ndarray) -> tuple[int, float]:
    height, width = canvas.shape[:2]
    return max(1, round(min(height, width) / 300)), max(0.4, min(height, width) / 1000)


def _draw_box(canvas: np.ndarray, corners: tuple[int, int, int, int], text: str,
              colour: tuple[int, int, int]) -> None:
    thickness, font_scale = _style(canvas)
    x1, y1, x2, y2 = corners
    cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thickness)
    (text_w, text_h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX,
                                                 font_scale, thickness)
    text_top = max(0, y1 - text_h - baseline - 2)
    cv2.rectangle(canvas, (x1, text_top), (x1 + text_w + 2, text_top + text_h + baseline + 2),
                  colour, -1)
    cv2.putText(canvas, text, (x1 + 1, text_top + text_h + 1), cv2.FONT_HERSHEY_SIMPLEX,
                font_scale, text_colour(colour), thickness, cv2.LINE_AA)


def draw_detections(image: np.ndarray, detections: Iterable[Detection]) -> np.ndarray:
    """Return a copy of an (H, W, 3) RGB image with boxes, labels and confidences drawn.

    A box that carries several classes (darknet may give one box more than one) is
    drawn once, with every label on it.
    """
    canvas = np.ascontiguousarray(image).copy()
    boxes: dict[tuple[int, int, int, int], list[Detection]] = {}
    for det in detections:
        corners = tuple(round(v) for v in (det.x1, det.y1, det.x2, det.y2))
        boxes.setdefault(corners, []).append(det)
    for corners, group in boxes.items():
        _draw_box(canvas, corners, " / ".join(f"{det.label} {det.confidence:.2f}"
                                              for det in group),
                  label_colour(group[0].class_id))
    return canvas


def track_colour(track_id: int) -> tuple[int, int, int]:
    """A tracked object's RGB colour: the same all through the video, neighbouring ids
    apart (PALETTE, stepped by a number prime to its length)."""
    return label_colour((track_id * 5) % len(PALETTE))


def draw_tracks(image: np.ndarray, detections: Sequence[Detection],
                track_ids: Sequence[int | None],
                trails: dict[int, Sequence[tuple[float, float]]]) -> np.ndarray:
    """Like ``draw_detections``, for a video frame whose boxes may belong to tracks: a
    tracked box in its track's colour with its id ("person #3 0.91") and its trail (the
    bottom centres of its last boxes, oldest first); an untracked one as usual."""
    canvas = draw_detections(image, [d for d, t in zip(detections, track_ids, strict=True)
                                     if t is None])
    thickness, _ = _style(canvas)
    for track_id, points in trails.items():
        if len(points) > 1:
            path = np.array([[round(x), round(y)] for x, y in points], dtype=np.int32)
            cv2.polylines(canvas, [path], False, track_colour(track_id), thickness + 1,
                          cv2.LINE_AA)
    for det, track_id in zip(detections, track_ids, strict=True):
        if track_id is not None:
            corners = (round(det.x1), round(det.y1), round(det.x2), round(det.y2))
            _draw_box(canvas, corners, f"{det.label} #{track_id} {det.confidence:.2f}",
                      track_colour(track_id))
    return canvas
