"""darknet's letterbox and stretch, ported exactly: resize, centre, 0.5 gray fill (or
resize to the whole input); and the way back.

darknet's ``resize_image`` (``src/image.c``) is a two-pass bilinear resize that samples
source position ``x * (w - 1) / (new_w - 1)`` (corner-aligned) in float32: first along
rows, then along columns, and it never blends in a row below the last output row. A
generic bilinear resize (OpenCV's, PyTorch's) samples pixel centres instead and moves
scores by several hundredths, so this module reproduces darknet's arithmetic.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Letterbox:
    """Where an image of ``width`` x ``height`` sits inside the network input: letterboxed
    (:meth:`fit`) or stretched over all of it (:meth:`stretch`)."""

    width: int
    height: int
    net_width: int
    net_height: int
    new_width: int
    new_height: int

    @classmethod
    def fit(cls, width: int, height: int, net_width: int, net_height: int) -> Letterbox:
        # darknet letterbox_image: the side that limits the scale gets the network size,
        # the other one is scaled with integer division.
        if np.float32(net_width) / np.float32(width) < np.float32(net_height) / np.float32(height):
            new_width, new_height = net_width, (height * net_width) // width
        else:
            new_width, new_height = (width * net_height) // height, net_height
        return cls(width, height, net_width, net_height, max(new_width, 1), max(new_height, 1))

    @classmethod
    def stretch(cls, width: int, height: int, net_width: int, net_height: int) -> Letterbox:
        # The fork without letter_box: resize_image to the network size, aspect ratio lost;
        # correct_yolo_boxes with letter=0 then leaves the boxes as they are.
        return cls(width, height, net_width, net_height, net_width, net_height)

    @property
    def left(self) -> int:
        return (self.net_width - self.new_width) // 2

    @property
    def top(self) -> int:
        return (self.net_height - self.new_height) // 2


def _samples(source: int, target: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """darknet's sampling along one axis: first index, second index, weight of the second."""
    scale = np.float32(source - 1) / np.float32(target - 1) if target > 1 else np.float32(0)
    position = np.arange(target, dtype=np.float32) * scale
    first = np.minimum(position.astype(np.int64), source - 1)
    fraction = position - first.astype(np.float32)
    second = np.minimum(first + 1, source - 1)
    return first, second, fraction


@dataclass(frozen=True)
class ResizeTables:
    """darknet's resize of an image of ``height`` x ``width`` to ``new_height`` x
    ``new_width``, as tables (one entry per output column or row): the source indices
    each output pixel blends and their float32 weights, darknet's special cases folded
    in. Every implementation of the resize (PyTorch here, the OpenVINO graph in
    ``runtimes``) applies these same numbers in the same order."""

    col_first: np.ndarray  # (W',) int64
    col_second: np.ndarray  # (W',) int64
    col_left: np.ndarray  # (W',) float32: 1 - dx
    col_right: np.ndarray  # (W',) float32: dx (0 for the last column: it is copied)
    row_first: np.ndarray  # (H',) int64
    row_second: np.ndarray  # (H',) int64
    row_top: np.ndarray  # (H',) float32: 1 - dy
    row_bottom: np.ndarray  # (H',) float32: dy (0 for the last row: darknet skips it)

    @classmethod
    def build(cls, width: int, height: int, new_width: int, new_height: int) -> ResizeTables:
        col_first, col_second, dx = _samples(width, new_width)
        if width == 1:
            dx[:] = 0
        dx[-1] = 0  # the last output column copies the last input column
        row_first, row_second, dy = _samples(height, new_height)
        bottom = dy.copy()
        # darknet skips the second row for the last output row (and for 1-pixel-high
        # images), keeping (1 - dy) * row even where dy is not quite zero.
        bottom[-1] = 0
        if height == 1:
            bottom[:] = 0
        one = np.float32(1)
        return cls(col_first, col_second, one - dx, dx, row_first, row_second, one - dy, bottom)

    def rows_needed(self) -> tuple[np.ndarray, np.ndarray]:
        """The source rows the vertical pass reads (sorted), and for each output row's
        first and second row its place among them: (first places, second places)
        concatenated."""
        needed, inverse = np.unique(np.concatenate([self.row_first, self.row_second]),
                                    return_inverse=True)
        return needed, inverse

    def cols_needed(self) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`rows_needed`, for the columns the horizontal pass reads."""
        needed, inverse = np.unique(np.concatenate([self.col_first, self.col_second]),
                                    return_inverse=True)
        return needed, inverse


def darknet_resize(image: torch.Tensor, new_width: int, new_height: int,
                   out: torch.Tensor | None = None) -> torch.Tensor:
    """Resize a (C, H, W) uint8 image as darknet does, to (C, H', W') float32 in [0, 1].

    Only the source rows that the vertical pass reads are resampled horizontally: the
    same arithmetic on every output pixel, a fraction of the work when shrinking a
    large image.
    """
    _, height, width = image.shape
    device = image.device
    tables = ResizeTables.build(width, height, new_width, new_height)
    needed, inverse = tables.rows_needed()

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(device, non_blocking=True)

    source = image.index_select(1, tensor(needed))  # (C, rows needed, W)
    left = source.index_select(2, tensor(tables.col_first)).float().div_(255).mul_(
        tensor(tables.col_left))
    right = source.index_select(2, tensor(tables.col_second)).float().div_(255).mul_(
        tensor(tables.col_right))
    rows = left.add_(right)  # (C, rows needed, W')
    top = rows.index_select(1, tensor(inverse[:new_height])).mul_(
        tensor(tables.row_top)[:, None])
    bottom = rows.index_select(1, tensor(inverse[new_height:])).mul_(
        tensor(tables.row_bottom)[:, None])
    return torch.add(top, bottom, out=out)  # (C, H', W')


def letterbox(image: torch.Tensor, box: Letterbox, out: torch.Tensor) -> None:
    """Write ``image`` (C, H, W uint8) letterboxed (or stretched) into ``out`` (C, net_h,
    net_w)."""
    if (box.new_width, box.new_height) != (box.net_width, box.net_height):
        out.fill_(0.5)
    darknet_resize(image, box.new_width, box.new_height,
                   out=out[:, box.top:box.top + box.new_height, box.left:box.left + box.new_width])


def check_image(image: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.dtype} {image.shape}")


def placement(letter_box: bool):
    """Where an image goes in the network input: letterboxed, or stretched to fill it."""
    return Letterbox.fit if letter_box else Letterbox.stretch


def letterbox_batch(images: Sequence[np.ndarray], net_width: int, net_height: int,
                    device: torch.device, *,
                    letter_box: bool = True) -> tuple[torch.Tensor, list[Letterbox]]:
    """(H, W, 3) uint8 RGB arrays -> a letterboxed (or, with ``letter_box`` false,
    stretched) (B, 3, h, w) float32 batch on ``device``."""
    batch = torch.empty((len(images), 3, net_height, net_width), device=device)
    boxes = []
    place = placement(letter_box)
    for slot, image in zip(batch, images, strict=True):
        check_image(image)
        box = place(image.shape[1], image.shape[0], net_width, net_height)
        with warnings.catch_warnings():
            # Read-only arrays are fine: the tensor is only read, then copied to planar.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            pixels = torch.from_numpy(image)
        planar = pixels.to(device).permute(2, 0, 1).contiguous()
        letterbox(planar, box, slot)  # (3, H, W) uint8 -> slot
        boxes.append(box)
    return batch, boxes


# The inputs of a graph that letterboxes by itself (``runtimes.openvino_backend``), as
# :func:`letterbox_tables` makes them.
TABLE_INPUTS = ("pixels", "row_first", "row_second", "row_top", "row_bottom", "col_first",
                "col_second", "col_left", "col_right", "inside")

# The value of each uint8 sample as darknet loads it, (float)v / 255. in float32: a graph
# looks it up rather than dividing (a runtime may divide by multiplying with 1/255, which
# is not the same number for every v).
UNIT_LEVELS = np.arange(256, dtype=np.float32) / np.float32(255)


def letterbox_tables(images: Sequence[np.ndarray], net_width: int, net_height: int, *,
                     letter_box: bool = True) -> tuple[dict[str, np.ndarray], list[Letterbox]]:
    """What a graph needs to letterbox ``images`` exactly as :func:`letterbox` does.

    ``pixels`` (B, 3, h, w) uint8 holds, for each image, only the source rows and columns
    that darknet's resize reads (at most twice the network input per side, whatever the
    image's size), planar, in the top-left corner. The tables say, for each pixel of the
    network input, which two of those columns (then rows) it blends and with which float32
    weights (``ResizeTables``, placed at the letterbox's offset), and ``inside`` (B, h', w')
    where the image lies (elsewhere darknet's 0.5 gray). Picking the samples is exact
    (a copy); all the arithmetic is left to the graph.
    """
    per_image = []
    place = placement(letter_box)
    for image in images:
        check_image(image)
        height, width = image.shape[:2]
        box = place(width, height, net_width, net_height)
        tables = ResizeTables.build(width, height, box.new_width, box.new_height)
        per_image.append((box, tables, tables.rows_needed(), tables.cols_needed()))
    count = len(images)
    rows = max((needed.size for _, _, (needed, _), _ in per_image), default=1)
    cols = max((needed.size for _, _, _, (needed, _) in per_image), default=1)
    arrays = {
        "pixels": np.zeros((count, 3, rows, cols), np.uint8),
        "row_first": np.zeros((count, net_height), np.int32),
        "row_second": np.zeros((count, net_height), np.int32),
        "row_top": np.zeros((count, net_height), np.float32),
        "row_bottom": np.zeros((count, net_height), np.float32),
        "col_first": np.zeros((count, net_width), np.int32),
        "col_second": np.zeros((count, net_width), np.int32),
        "col_left": np.zeros((count, net_width), np.float32),
        "col_right": np.zeros((count, net_width), np.float32),
        "inside": np.zeros((count, net_height, net_width), np.bool_),
    }
    for index, (image, (box, tables, (row_src, row_at), (col_src, col_at))) in enumerate(
            zip(images, per_image, strict=True)):
        picked = np.take(np.take(image, row_src, axis=0), col_src, axis=1)  # (r, c, 3)
        arrays["pixels"][index, :, :row_src.size, :col_src.size] = picked.transpose(2, 0, 1)
        top, left = box.top, box.left
        ys, xs = slice(top, top + box.new_height), slice(left, left + box.new_width)
        arrays["row_first"][index, ys] = row_at[:box.new_height]
        arrays["row_second"][index, ys] = row_at[box.new_height:]
        arrays["row_top"][index, ys] = tables.row_top
        arrays["row_bottom"][index, ys] = tables.row_bottom
        arrays["col_first"][index, xs] = col_at[:box.new_width]
        arrays["col_second"][index, xs] = col_at[box.new_width:]
        arrays["col_left"][index, xs] = tables.col_left
        arrays["col_right"][index, xs] = tables.col_right
        arrays["inside"][index, ys, xs] = True
    return arrays, [entry[0] for entry in per_image]


def boxes_to_image(relative: torch.Tensor, image_of: torch.Tensor,
                   boxes: list[Letterbox]) -> torch.Tensor:
    """Map (N, 4) centre/size boxes, as fractions of the network input, to image pixels.

    ``image_of`` (N,) says which letterbox each box came through. Follows darknet's
    ``correct_yolo_boxes`` (whose offset uses a real-valued half of the padding) and
    returns (x1, y1, x2, y2), not yet clipped: darknet runs NMS on these.
    """
    per_image = torch.tensor([
        [(b.net_width - b.new_width) / 2.0 / b.net_width,
         (b.net_height - b.new_height) / 2.0 / b.net_height,
         b.net_width / b.new_width * b.width,
         b.net_height / b.new_height * b.height] for b in boxes],
        dtype=relative.dtype, device=relative.device)  # (B, 4)
    offset_x, offset_y, scale_x, scale_y = per_image[image_of].unbind(1)
    cx = (relative[:, 0] - offset_x) * scale_x
    cy = (relative[:, 1] - offset_y) * scale_y
    half_w = relative[:, 2] * scale_x / 2
    half_h = relative[:, 3] * scale_y / 2
    return torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=1)  # (N, 4)
