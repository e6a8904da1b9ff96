"""Multi-object tracking over a video's detections: which box of frame 813 is the object
of frame 812.

ByteTrack, as Roboflow's ``trackers`` implements it (a Kalman filter per object, IoU
matching in two rounds: confident boxes first, then the weaker ones to revive objects
the confident round lost), one tracker per class so that a track never changes label.
What this module adds around it:

- **Time, not frames.** The lost-track buffer is in milliseconds and follows the frames a
  job processes (a stride, a sample rate): the tracker runs at the processed rate.
- **Every box of a track.** ByteTrack gives a new object its id from its second frame
  on; the box it started from (the frame before, the best overlap with the first tracked
  box) is given the same id here.
- **Nested duplicates.** A detector often keeps a second, inner box on one object (a
  person's upper body inside the whole person; NMS keeps both when their IoU is low). A
  box lying mostly inside a larger box of the same class in the same frame
  (``nested_overlap`` of its area) is not tracked: it keeps no track id, so that it does
  not become a ghost object.
- **Flicker is not an object.** Tracks shorter than ``min_track_frames`` processed frames
  are dropped (their boxes keep no id).
- **Ids by first appearance**, 1, 2, 3…, the same for the same detections every run.

Tracking is offline: it runs over a whole video's stored detections in frame order, so
the parts a video was processed in never break a track.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import supervision as sv  # the tracker's own box type
from trackers import ByteTrackTracker


@dataclass(frozen=True)
class TrackerConfig:
    """The tracker's parameters (defaults: settings TRACK_*; per job: track_buffer_ms,
    track_activation_threshold)."""

    buffer_ms: float = 1000.0  # how long a lost object is waited for before its track ends
    activation_threshold: float = 0.5  # a box this confident may start a track
    high_threshold: float = 0.5  # boxes below it join tracks in ByteTrack's second round only
    match_iou: float = 0.2  # the least IoU between a track's predicted box and a box it takes
    # A box this much inside a larger one of its class is a duplicate (None: none is).
    nested_overlap: float | None = 0.85
    min_track_frames: int = 3  # shorter tracks are flicker, not objects

    def __post_init__(self) -> None:
        if self.buffer_ms < 0 or self.min_track_frames < 1:
            raise ValueError("buffer_ms must be >= 0 and min_track_frames >= 1")
        for name in ("activation_threshold", "high_threshold", "match_iou", "nested_overlap"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1:
                raise ValueError(f"{name} must be within [0, 1]")


@dataclass(frozen=True)
class TrackBox:
    """One detection to track; ``key`` is the caller's (a row id)."""

    key: int
    class_id: int
    confidence: float
    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def area(self) -> float:
        return max(0.0, self.x2 - self.x1) * max(0.0, self.y2 - self.y1)


def _intersection(a: TrackBox, b: TrackBox) -> float:
    width = min(a.x2, b.x2) - max(a.x1, b.x1)
    height = min(a.y2, b.y2) - max(a.y1, b.y1)
    return max(0.0, width) * max(0.0, height)


def _iou(a: TrackBox, b: TrackBox) -> float:
    inter = _intersection(a, b)
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


def nested_duplicates(boxes: Sequence[TrackBox], overlap: float | None) -> set[int]:
    """Keys of the boxes lying ``overlap`` or more (of their own area) inside a larger box
    of the same class that is not itself a duplicate."""
    nested: set[int] = set()
    if overlap is None:
        return nested
    kept: list[TrackBox] = []
    for box in sorted(boxes, key=lambda b: (-b.area, -b.confidence, b.key)):
        if box.area > 0 and any(outer.class_id == box.class_id
                                and _intersection(outer, box) >= overlap * box.area
                                for outer in kept):
            nested.add(box.key)
        else:
            kept.append(box)
    return nested


def track(frames: Iterable[tuple[int, Sequence[TrackBox]]], *, fps: float,
          config: TrackerConfig | None = None) -> dict[int, int]:
    """Track objects through ``frames``: every processed frame in order, as
    (frame_index, its boxes), empty frames included (they age the tracks). ``fps``: the
    processed frames per second. Returns box key -> track id (1, 2, ... by first
    appearance) for the tracked boxes; the others are not in it."""
    config = config or TrackerConfig()
    # The library's buffer is counted in 30 FPS frames and scaled to frame_rate.
    buffer = max(0, round(config.buffer_ms * 30 / 1000))
    trackers: dict[int, ByteTrackTracker] = {}
    # (class, the tracker's id) -> [(position of the frame, box)], in frame order.
    members: dict[tuple[int, int], list[tuple[int, TrackBox]]] = {}
    untracked: list[dict[int, TrackBox]] = []  # per frame position: key -> box, no id yet
    for position, (_, boxes) in enumerate(frames):
        nested = nested_duplicates(boxes, config.nested_overlap)
        by_class: dict[int, list[TrackBox]] = {}
        for box in boxes:
            if box.key not in nested:
                by_class.setdefault(box.class_id, []).append(box)
        free: dict[int, TrackBox] = {}
        # A class's tracker runs on every frame while it follows something (the frames
        # without a box age its tracks); one with nothing to follow waits for a box.
        live = {class_id for class_id, tracker in trackers.items() if tracker.tracks}
        for class_id in sorted(set(by_class) | live):
            tracker = trackers.get(class_id)
            if tracker is None:
                tracker = trackers[class_id] = ByteTrackTracker(
                    lost_track_buffer=buffer, frame_rate=fps,
                    track_activation_threshold=config.activation_threshold,
                    high_conf_det_threshold=config.high_threshold,
                    minimum_iou_threshold=config.match_iou)
            present = by_class.get(class_id, [])
            detections = sv.Detections(
                xyxy=np.array([[b.x1, b.y1, b.x2, b.y2] for b in present],
                              dtype=np.float32).reshape(-1, 4),
                confidence=np.array([b.confidence for b in present], dtype=np.float32),
                class_id=np.full(len(present), class_id, dtype=int),
                data={"index": np.arange(len(present))})
            result = tracker.update(detections)
            if not len(result):
                continue
            for index, tracker_id in zip(result.data["index"], result.tracker_id, strict=True):
                box = present[int(index)]
                if tracker_id < 0:
                    free[box.key] = box
                else:
                    members.setdefault((class_id, int(tracker_id)), []).append((position, box))
        untracked.append(free)
    _take_first_boxes(members, untracked, config)
    tracks = _relink(list(members.values()), fps=fps, config=config)
    kept = [boxes for boxes in tracks if len(boxes) >= config.min_track_frames]
    kept.sort(key=lambda boxes: (boxes[0][0], boxes[0][1].key))
    return {box.key: number for number, boxes in enumerate(kept, start=1)
            for _, box in boxes}


def _take_first_boxes(members: dict[tuple[int, int], list[tuple[int, TrackBox]]],
                      untracked: list[dict[int, TrackBox]], config: TrackerConfig) -> None:
    """Give each track the box it started from: ByteTrack names an object from its second
    frame, and the first frame's box is the one that overlaps the first named box best."""
    for boxes in members.values():
        position, first = boxes[0]
        if position == 0:
            continue
        candidates = [box for box in untracked[position - 1].values()
                      if box.class_id == first.class_id
                      and box.confidence >= config.activation_threshold]
        best = max(candidates, key=lambda box: (_iou(box, first), -box.key), default=None)
        if best is not None and _iou(best, first) >= max(config.match_iou, 0.3):
            del untracked[position - 1][best.key]
            boxes.insert(0, (position - 1, best))


Track = list[tuple[int, TrackBox]]  # (frame position, box), in frame order


def _heading(track: Track, position: int, window: int) -> TrackBox:
    """Where a track's object would be at frame ``position``, going on as in its last
    ``window`` frames (a second): its centre at their mean velocity, its size their
    median (boxes shrink as an object goes behind another)."""
    recent = track[-window:]
    times = np.array([p for p, _ in recent], dtype=float)
    centres = np.array([((b.x1 + b.x2) / 2, (b.y1 + b.y2) / 2) for _, b in recent])
    widths = np.median([b.x2 - b.x1 for _, b in recent])
    heights = np.median([b.y2 - b.y1 for _, b in recent])
    if len(recent) > 1 and times[-1] > times[0]:
        velocity = (centres[-1] - centres[0]) / (times[-1] - times[0])
    else:
        velocity = np.zeros(2)
    cx, cy = centres[-1] + velocity * (position - times[-1])
    last = recent[-1][1]
    return TrackBox(-1, last.class_id, last.confidence, cx - widths / 2, cy - heights / 2,
                    cx + widths / 2, cy + heights / 2)


def _relink(tracks: list[Track], *, fps: float, config: TrackerConfig) -> list[Track]:
    """Join a track that ended to one that began within ``buffer_ms`` after it, of the
    same class, where the second begins where the first was heading (IoU of its first box
    with the first track's course at least ``match_iou``): an object hidden for a while
    comes back under its own id. Offline, this sees what the online tracker could not:
    where the object reappeared. Best overlaps are joined first; each track is joined to
    at most one before and one after."""
    max_gap = config.buffer_ms * fps / 1000
    window = max(2, round(fps))
    by_start = sorted(range(len(tracks)), key=lambda index: tracks[index][0][0])
    starts = [tracks[index][0][0] for index in by_start]
    candidates: list[tuple[float, int, int]] = []
    for a, before in enumerate(tracks):
        end = before[-1][0]
        # Only the tracks that begin after this one ends, within the buffer.
        for b in by_start[bisect_right(starts, end):bisect_right(starts, end + max_gap)]:
            start, first = tracks[b][0]
            if first.class_id != before[0][1].class_id:
                continue
            overlap = _iou(_heading(before, start, window), first)
            if overlap >= config.match_iou:
                candidates.append((overlap, a, b))
    successor: dict[int, int] = {}
    predecessor: dict[int, int] = {}
    for _, a, b in sorted(candidates, key=lambda c: (-c[0], c[1], c[2])):
        if a not in successor and b not in predecessor:
            successor[a], predecessor[b] = b, a
    joined: list[Track] = []
    for index, track in enumerate(tracks):
        if index in predecessor:
            continue
        chain = list(track)
        while index in successor:
            index = successor[index]
            chain.extend(tracks[index])
        joined.append(chain)
    return joined


def processed_fps(interval_ms: float) -> float:
    """Processed frames per second, from the time between two processed frames."""
    return 1000 / interval_ms if interval_ms > 0 and math.isfinite(interval_ms) else 30.0
