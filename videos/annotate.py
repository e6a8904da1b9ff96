"""The annotated video: every frame with the boxes of its (latest processed) frame drawn;
a tracked object's box in its own colour with its id, and its trail over the last second.

Decoded with OpenCV, drawn with the engine's ``draw_tracks``, encoded with PyAV as
H.264 in MP4 (yuv420p, moov first), which every browser plays in a <video> tag.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from fractions import Fraction
from itertools import groupby

import av
import cv2

from engine import Detection as EngineDetection
from engine.annotate import draw_tracks
from jobs.frames import FrameSelection

Frame = tuple[list[EngineDetection], list[int | None]]


def _by_frame(rows: Iterable) -> Iterator[tuple[int, Frame]]:
    for frame_index, group in groupby(rows, key=lambda row: row.frame_index):
        rows_of_frame = list(group)
        yield frame_index, ([EngineDetection(r.class_id, r.label, r.confidence, r.x1, r.y1,
                                             r.x2, r.y2) for r in rows_of_frame],
                            [getattr(r, "track_id", None) for r in rows_of_frame])


class _Trails:
    """Each track's last positions (the bottom centre of its box), over ``length``
    processed frames; a track unseen for as long is forgotten."""

    def __init__(self, length: int) -> None:
        self.length = max(2, length)
        self.points: dict[int, deque[tuple[float, float]]] = {}
        self.seen: dict[int, int] = {}
        self.frame = 0

    def add(self, detections: list[EngineDetection], track_ids: list[int | None]) -> None:
        self.frame += 1
        for det, track_id in zip(detections, track_ids, strict=True):
            if track_id is not None:
                trail = self.points.setdefault(track_id, deque(maxlen=self.length))
                trail.append(((det.x1 + det.x2) / 2, det.y2))
                self.seen[track_id] = self.frame
        for track_id in [t for t, last in self.seen.items() if self.frame - last >= self.length]:
            del self.points[track_id], self.seen[track_id]

    def visible(self, track_ids: list[int | None]) -> dict[int, deque[tuple[float, float]]]:
        return {t: self.points[t] for t in track_ids if t is not None and t in self.points}


def render_annotated(source: str, output: str, detections: Iterable, *,
                     selection: FrameSelection) -> int:
    """Write ``output``; ``detections`` must come ordered by frame. Returns frames written.

    Frames that were not processed (a stride, a sample rate) show the boxes of the
    last processed frame before them.
    """
    fps = selection.fps
    capture = cv2.VideoCapture(source)
    upcoming = _by_frame(detections)
    nothing: Frame = ([], [])
    next_frame, next_boxes = next(upcoming, (None, nothing))
    current = nothing
    trails = _Trails(round(1000 / selection.interval_ms))  # a second of processed frames
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
                next_frame, next_boxes = next(upcoming, (None, nothing))
            if index in selection:  # a processed frame: its own boxes, maybe none
                current = next_boxes if next_frame == index else nothing
                trails.add(*current)
                if next_frame == index:
                    next_frame, next_boxes = next(upcoming, (None, nothing))
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            if stream is None:
                rate = Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(25)
                stream = container.add_stream("libx264", rate=rate)
                height, width = rgb.shape[:2]
                stream.width, stream.height = width - width % 2, height - height % 2
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": "23", "preset": "veryfast"}
            drawn = draw_tracks(rgb, *current, trails.visible(current[1]))[
                :stream.height, :stream.width]
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
