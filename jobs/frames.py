"""Which frames of a video a job processes, from its parameters (plain Python)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class FrameSelection:
    """Which source frames to process: every ``stride``-th, or about ``sample_fps`` a second."""

    fps: float
    stride: int = 1
    sample_fps: float | None = None

    def __contains__(self, index: int) -> bool:
        if self.sample_fps is not None and self.sample_fps < self.fps:
            # The first frame of each 1/sample_fps interval.
            return index == 0 or (math.floor(index * self.sample_fps / self.fps)
                                  != math.floor((index - 1) * self.sample_fps / self.fps))
        return index % self.stride == 0

    def count(self, frames: int) -> int:
        return sum(1 for index in range(frames) if index in self)

    @property
    def interval_ms(self) -> float:
        """Milliseconds between two processed frames (the finest a timeline can be)."""
        if self.sample_fps is not None and self.sample_fps < self.fps:
            return 1000 / self.sample_fps
        return 1000 * self.stride / self.fps
