"""Test videos made from the shared clips: cut, re-encoded, empty."""

from __future__ import annotations

from pathlib import Path

import cv2


def reencode(source: Path, target: Path, fourcc: str = "MJPG", limit: int | None = None) -> int:
    capture = cv2.VideoCapture(str(source))
    fps = capture.get(cv2.CAP_PROP_FPS)
    writer = None
    count = 0
    while limit is None or count < limit:
        ok, frame = capture.read()
        if not ok:
            break
        if writer is None:
            height, width = frame.shape[:2]
            writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*fourcc), fps,
                                     (width, height))
        writer.write(frame)
        count += 1
    writer.release()
    capture.release()
    return count


def zero_frame_mp4(target: Path) -> Path:
    writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"mp4v"), 25, (64, 64))
    writer.release()
    return target


def decoded_frames(path: Path) -> list:
    """Every frame of a video, RGB, as the pipeline decodes them."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    return frames
