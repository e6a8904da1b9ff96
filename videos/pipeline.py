"""Streaming a video's frames to the detector: decode in a thread, batch, detect.

Frames are never all in memory: a decoding thread (OpenCV ``VideoCapture``) fills a
bounded queue with the frames to process, and the caller takes them in batches for one
forward pass each. Memory is bounded by the queue and one batch, whatever the length.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from jobs.frames import FrameSelection


@dataclass(frozen=True)
class Frame:
    index: int
    timestamp_ms: int
    image: np.ndarray  # (H, W, 3) uint8 RGB


@dataclass
class DecodeEnd:
    """How decoding ended: the source frames read, and an error if it broke off."""

    frames_read: int = 0
    error: str | None = None


class FrameReader:
    """Decode frames ``start`` to ``end`` (exclusive; None: the end of the video) in a
    thread; iterate for batches of the selected ones."""

    def __init__(self, path: str, selection: FrameSelection, *, start: int = 0,
                 end: int | None = None, batch_size: int = 8, queue_frames: int = 16) -> None:
        self.path = path
        self.selection = selection
        self.start = start
        self.stop_at = end
        self.batch_size = batch_size
        self.end = DecodeEnd(frames_read=start)
        self._queue: queue.Queue[Frame | None] = queue.Queue(maxsize=queue_frames)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._decode, name="pmr-decoder", daemon=True)

    def __enter__(self) -> FrameReader:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():  # unblock a decoder waiting on a full queue
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=0.05)
        self._thread.join()

    def _put(self, item: Frame | None) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _decode(self) -> None:
        capture = cv2.VideoCapture(self.path)
        try:
            if not capture.isOpened():
                self.end.error = "the video cannot be opened"
                return
            index = self._seek(capture)
            fps = self.selection.fps
            while not self._stop.is_set():
                if self.stop_at is not None and index >= self.stop_at:
                    break
                if not capture.grab():
                    break
                if index in self.selection:
                    ok, bgr = capture.retrieve()
                    if not ok or bgr is None:
                        self.end.error = f"frame {index} cannot be decoded"
                        break
                    # Timestamps from the frame index: exact for constant frame rates, and
                    # the same whether the frame was reached by seeking or by decoding.
                    frame = Frame(index, round(index * 1000 / fps),
                                  cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                    if not self._put(frame):
                        break
                index += 1
                self.end.frames_read = index
        except cv2.error as exc:
            self.end.error = f"decoding failed: {exc}"
        finally:
            capture.release()
            self._put(None)

    def _seek(self, capture: cv2.VideoCapture) -> int:
        """Position on frame ``start``: by seeking when it lands exactly, else by decoding."""
        if self.start == 0:
            return 0
        if capture.set(cv2.CAP_PROP_POS_FRAMES, self.start) and \
                int(capture.get(cv2.CAP_PROP_POS_FRAMES)) == self.start:
            return self.start
        capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
        for index in range(self.start):
            if not capture.grab():
                return index
        return self.start

    def batches(self) -> Iterator[list[Frame]]:
        batch: list[Frame] = []
        while True:
            item = self._queue.get()
            if item is None:
                break
            batch.append(item)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch


def read_frame(path: str, index: int) -> np.ndarray | None:
    """One source frame as (H, W, 3) RGB, None if it cannot be read."""
    capture = cv2.VideoCapture(path)
    try:
        if index:
            capture.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = capture.read()
    finally:
        capture.release()
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if ok and frame is not None else None
