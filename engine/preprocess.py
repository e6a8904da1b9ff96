"""darknet's letterbox and stretch, ported exactly: resize, centre, 0.5 gray fill (or
resize to the whole input); and the way back.

darknet's ``resize_image`` (``src/image.c``) is a two-pass bilinear resize that samples
source position ``x * (w - 1) / (new_w - 1)`` (corner-aligned) in float32: first along
rows, then along columns, and it never blends in a row below the last output row. A
generic bilinear resize (OpenCV's, PyTorch's) samples pixel centres instead and moves
scores by several hundredths, so this module reproduces darknet's arithmetic.
"""

from __future__ import annotations

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


def darknet_resize(image: torch.Tensor, new_width: int, new_height: int,
                   out: torch.Tensor | None = None) -> torch.Tensor:
    """Resize a (C, H, W) uint8 image as darknet does, to (C, H', W') float32 in [0, 1].

    Only the source rows that the vertical pass reads are resampled horizontally: the
    same arithmetic on every output pixel, a fraction of the work when shrinking a
    large image.
    """
    _, height, width = image.shape
    device = image.device
    col_first, col_second, dx = _samples(width, new_width)
    if width == 1:
        dx[:] = 0
    dx[-1] = 0  # the last output column copies the last input column
    row_first, row_second, dy = _samples(height, new_height)
    bottom_weight = dy.copy()
    # darknet skips the second row for the last output row (and for 1-pixel-high images),
    # keeping (1 - dy) * row even where dy is not quite zero.
    bottom_weight[-1] = 0
    if height == 1:
        bottom_weight[:] = 0
    needed, inverse = np.unique(np.concatenate([row_first, row_second]), return_inverse=True)

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(device, non_blocking=True)

    source = image.index_select(1, tensor(needed))  # (C, rows needed, W)
    dx_t = tensor(dx)
    left = source.index_select(2, tensor(col_first)).float().div_(255).mul_(1 - dx_t)
    right = source.index_select(2, tensor(col_second)).float().div_(255).mul_(dx_t)
    rows = left.add_(right)  # (C, rows needed, W')
    top = rows.index_select(1, tensor(inverse[:new_height])).mul_(tensor(1 - dy)[:, None])
    bottom = rows.index_select(1, tensor(inverse[new_height:])).mul_(
        tensor(bottom_weight)[:, None])
    return torch.add(top, bottom, out=out)  # (C, H', W')


def letterbox(image: torch.Tensor, box: Letterbox, out: torch.Tensor) -> None:
    """Write ``image`` (C, H, W uint8) letterboxed (or stretched) into ``out`` (C, net_h,
    net_w)."""
    if (box.new_width, box.new_height) != (box.net_width, box.net_height):
        out.fill_(0.5)
    darknet_resize(image, box.new_width, box.new_height,
                   out=out[:, box.top:box.top + box.new_height, box.left:box.left + box.new_width])


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
