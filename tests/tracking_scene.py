"""A test video whose tracks are known: real objects cut from coco128 (by their labelled
boxes) moving over a real photograph along set paths — two people crossing, one hidden
behind the other for a moment, a bus entering and leaving the frame — written losslessly,
with the ground truth of every frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

WIDTH, HEIGHT, FPS = 640, 480, 15

# Background: a coco128 photograph blurred until nothing in it is an object any more.
BACKGROUND = "000000000139"


@dataclass(frozen=True)
class Actor:
    """An object: a labelled coco128 box, its height in the scene, where it goes."""

    name: str  # the ground-truth id
    image: str
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 in the coco128 image
    height: int
    start: tuple[float, float]  # top-left corner at the first frame
    end: tuple[float, float]  # ... and at the last
    layer: int  # higher layers are drawn over lower ones

    def corner(self, frame: int, frames: int) -> tuple[float, float]:
        t = frame / max(1, frames - 1)
        return (self.start[0] + t * (self.end[0] - self.start[0]),
                self.start[1] + t * (self.end[1] - self.start[1]))


# Two people walking towards each other (the nearer one passes in front and hides the
# other), and a bus crossing the whole frame, in from the left and out on the right.
ACTORS = (
    Actor("walker", "000000007511", (386, 241, 509, 472), 210, (30, 230), (470, 220), 0),
    Actor("passer", "000000012639", (199, 205, 317, 519), 240, (500, 215), (60, 225), 1),
    Actor("bus", "000000005037", (99, 20, 575, 372), 130, (-200, 30), (660, 50), 0),
)
FRAMES = 90
NAMES = [actor.name for actor in ACTORS]

# An object hidden for more than this share of its box is not in the ground truth of
# that frame (no detector can see it).
MIN_VISIBLE = 0.5


@dataclass(frozen=True)
class Truth:
    """An object in one frame: its ground-truth id and box (clipped to the frame)."""

    frame: int
    name: str
    box: tuple[float, float, float, float]


def _crops(coco128: Path) -> dict[str, np.ndarray]:
    crops = {}
    for actor in ACTORS:
        image = cv2.cvtColor(cv2.imread(str(coco128 / "images" / f"{actor.image}.jpg")),
                             cv2.COLOR_BGR2RGB)
        x1, y1, x2, y2 = actor.box
        crop = image[y1:y2, x1:x2]
        width = round(crop.shape[1] * actor.height / crop.shape[0])
        crops[actor.name] = cv2.resize(crop, (width, actor.height), interpolation=cv2.INTER_AREA)
    return crops


def _background(coco128: Path) -> np.ndarray:
    image = cv2.cvtColor(cv2.imread(str(coco128 / "images" / f"{BACKGROUND}.jpg")),
                         cv2.COLOR_BGR2RGB)
    image = cv2.resize(image, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)
    return cv2.GaussianBlur(image, (0, 0), sigmaX=21)


def _clip(box):
    x1, y1, x2, y2 = box
    return max(0.0, x1), max(0.0, y1), min(float(WIDTH), x2), min(float(HEIGHT), y2)


def _area(box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def render(coco128: Path) -> tuple[list[np.ndarray], list[Truth]]:
    """The frames (RGB) and the ground truth of each."""
    crops = _crops(coco128)
    background = _background(coco128)
    frames: list[np.ndarray] = []
    truth: list[Truth] = []
    for index in range(FRAMES):
        canvas = background.copy()
        placed = []
        for actor in sorted(ACTORS, key=lambda a: a.layer):
            crop = crops[actor.name]
            x, y = (round(v) for v in actor.corner(index, FRAMES))
            height, width = crop.shape[:2]
            box = (x, y, x + width, y + height)
            cx1, cy1, cx2, cy2 = (int(v) for v in _clip(box))
            if cx2 > cx1 and cy2 > cy1:
                canvas[cy1:cy2, cx1:cx2] = crop[cy1 - y:cy2 - y, cx1 - x:cx2 - x]
            placed.append((actor, _clip(box)))
        for position, (actor, box) in enumerate(placed):
            if _area(box) <= 0:
                continue
            mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
            x1, y1, x2, y2 = (int(v) for v in box)
            mask[y1:y2, x1:x2] = True
            for _, above in placed[position + 1:]:
                a1, b1, a2, b2 = (int(v) for v in above)
                mask[b1:b2, a1:a2] = False
            if mask.sum() >= MIN_VISIBLE * _area(box):
                truth.append(Truth(index, actor.name, box))
        frames.append(canvas)
    return frames, truth


def write_lossless(frames: list[np.ndarray], target: Path) -> Path:
    """An MP4 that decodes to exactly ``frames`` (H.264 in RGB, lossless)."""
    container = av.open(str(target), mode="w")
    stream = container.add_stream("libx264rgb", rate=FPS)
    stream.width, stream.height = WIDTH, HEIGHT
    stream.pix_fmt = "bgr24"
    stream.options = {"qp": "0", "preset": "veryfast"}
    for image in frames:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[..., ::-1]),
                                           format="bgr24")
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
    container.close()
    return target


def mot_scores(truth: list[Truth], tracked: list[tuple[int, int, tuple]]) -> dict:
    """MOTA, IDF1 and ID switches (motmetrics; matched at IoU >= 0.5) of ``tracked``:
    (frame, track id, box) for each tracked box."""
    import motmetrics as mm

    accumulator = mm.MOTAccumulator(auto_id=False)
    for index in range(FRAMES):
        gt = [t for t in truth if t.frame == index]
        hyp = [t for t in tracked if t[0] == index]
        distances = _iou_distances(mm, [_xywh(t.box) for t in gt], [_xywh(h[2]) for h in hyp])
        accumulator.update([NAMES.index(t.name) + 1 for t in gt], [h[1] for h in hyp], distances,
                           frameid=index)
    host = mm.metrics.create()
    summary = host.compute(accumulator, metrics=["mota", "idf1", "num_switches",
                                                 "num_unique_objects", "mostly_tracked"],
                           name="scene")
    return {key: float(value) for key, value in summary.iloc[0].items()}


def _iou_distances(mm, gt: list, hyp: list, max_distance: float = 0.5):
    """motmetrics' iou_matrix, which calls np.asfarray (gone in NumPy 2): its boxiou, on
    float arrays, with its do-not-pair rule (NaN past ``max_distance``)."""
    if not gt or not hyp:
        return np.empty((0, 0))
    objects, hypotheses = np.asarray(gt, dtype=float), np.asarray(hyp, dtype=float)
    distance = 1 - mm.distances.boxiou(objects[:, None], hypotheses[None, :])
    return np.where(distance > max_distance, np.nan, distance)


def _xywh(box) -> list[float]:
    x1, y1, x2, y2 = box
    return [x1, y1, x2 - x1, y2 - y1]
