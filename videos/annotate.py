"""The annotated video: every frame with the boxes of its (latest processed) frame drawn.

Decoded with OpenCV, drawn with the engine's ``draw_detections``, encoded with PyAV as
H.264 in MP4 (yuv420p, moov first), which every browser plays in a <video> tag.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from fractions import Fraction
from itertools import groupby

import av
import cv2

from engine import Detection as EngineDetection
from engine.annotate import draw_detections
from jobs.frames import FrameSelection


def _by_frame(rows: Iterable) -> Iterator[tuple[int, list[EngineDetection]]]:
    for frame_index, group in groupby(rows, key=lambda row: row.frame_index):
        yield frame_index, [EngineDetection(r.class_id, r.label, r.confidence, r.x1, r.y1, r.x2,
                                            r.y2) for r in group]


def render_annotated(source: str, output: str, detections: Iterable, *,
                     selection: FrameSelection) -> int:
    """Write ``output``; ``detections`` must come ordered by frame. Returns frames written.

    Frames that were not processed (a stride, a sample rate) show the boxes of the
    last processed frame before them.
    """
    fps = selection.fps
    capture = cv2.VideoCapture(source)
    upcoming = _by_frame(detections)
    next_frame, next_boxes = next(upcoming, (None, []))
    current: list[EngineDetection] = []
    written = 0
    container = av.open(output, mode="w", options={"movflags": "+faststart"})
    try:
        stream = None
        index = 0
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            while next_frame is not None and next_frame < index:  # not expected: skip
                next_frame, next_boxes = next(upcoming, (None, []))
            if index in selection:  # a processed frame: its own boxes, maybe none
                current = next_boxes if next_frame == index else []
                if next_frame == index:
                    next_frame, next_boxes = next(upcoming, (None, []))
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            if stream is None:
                rate = Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(25)
                stream = container.add_stream("libx264", rate=rate)
                height, width = rgb.shape[:2]
                stream.width, stream.height = width - width % 2, height - height % 2
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": "23", "preset": "veryfast"}
            drawn = draw_detections(rgb, current)[:stream.height, :stream.width]
            frame = av.VideoFrame.from_ndarray(drawn, format="rgb24")
            container.mux(stream.encode(frame))
            written += 1
            index += 1
        if stream is not None:
            container.mux(stream.encode(None))
    finally:
        container.close()
        capture.release()
    return written
