"""Class-aware non-maximum suppression in plain torch (no torchvision on CPU here).

Greedy NMS — the highest-scoring box wins, every box of the same group overlapping it
by more than the threshold goes, repeat — has a closed form that vectorizes: box ``j``
survives iff no *surviving* box ``i`` ranked above it in its group overlaps it. That
recursion has exactly one solution, and iterating it from "everything survives"
reaches it after as many rounds as the longest chain of boxes suppressing each other
(usually 2-4), each round one boolean matrix product per group. So the result is the
exact greedy answer, for every group of every image at once, with no time limit.
"""

from __future__ import annotations

import torch

# Upper bound on elements of the per-chunk (groups, M, M) IoU matrix (~64 MiB in float32).
_CHUNK_ELEMENTS = 1 << 24
# Groups larger than this (rare: thousands of boxes of one class in one image) are
# suppressed box by box instead, in O(M) memory.
_LARGE_GROUP = 2048


def box_iou_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of every pair of (..., N, 4) and (..., M, 4) x1y1x2y2 boxes -> (..., N, M)."""
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    left_top = torch.maximum(a[..., :, None, :2], b[..., None, :, :2])
    right_bottom = torch.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
    wh = (right_bottom - left_top).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area_a[..., :, None] + area_b[..., None, :] - inter)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor,
                iou_threshold: float | torch.Tensor) -> torch.Tensor:
    """Greedy NMS run independently within each group (e.g. image x class).

    ``boxes`` (N, 4) x1y1x2y2, ``scores`` (N,), ``groups`` (N,) integers; a box is
    suppressed by a better one of its group overlapping it by more than
    ``iou_threshold`` (a float, or (N,) per box: one value per group). Returns the
    indices of the kept boxes, highest score first (ties keep input order).
    """
    count = scores.numel()
    if count == 0:
        return torch.empty(0, dtype=torch.long, device=scores.device)
    order = torch.argsort(scores, descending=True, stable=True)
    order = order[torch.argsort(groups[order], stable=True)]  # by group, then by score
    _, sizes = torch.unique_consecutive(groups[order], return_counts=True)
    starts = torch.cumsum(sizes, 0) - sizes
    keep = torch.zeros(count, dtype=torch.bool, device=scores.device)
    thresholds = torch.as_tensor(iou_threshold, dtype=boxes.dtype,
                                 device=boxes.device).expand(count)[order]

    sizes_list = sizes.tolist()
    starts_list = starts.tolist()
    by_size = sorted(range(len(sizes_list)), key=lambda g: -sizes_list[g])
    position = 0
    while position < len(by_size) and sizes_list[by_size[position]] > _LARGE_GROUP:
        group = by_size[position]
        _suppress_large_group(boxes, thresholds, order, starts_list[group], sizes_list[group],
                              keep)
        position += 1
    while position < len(by_size):
        widest = sizes_list[by_size[position]]
        take = max(1, _CHUNK_ELEMENTS // (widest * widest))
        chunk = torch.tensor(by_size[position:position + take], device=scores.device)
        position += take
        _suppress_chunk(boxes, thresholds, order, starts[chunk], sizes[chunk], widest, keep)

    kept = order[keep]
    return kept[torch.argsort(scores[kept], descending=True, stable=True)]


def _suppress_large_group(boxes: torch.Tensor, thresholds: torch.Tensor, order: torch.Tensor,
                          start: int, size: int, keep: torch.Tensor) -> None:
    """Plain greedy NMS for one big group: each survivor removes what it overlaps."""
    members = boxes[order[start:start + size]]  # (M, 4), best first
    threshold = thresholds[start]
    alive = torch.ones(size, dtype=torch.bool, device=boxes.device)
    index = 0
    while index < size:
        overlaps = box_iou_matrix(members[index:index + 1], members[index + 1:])[0]  # (M - i - 1,)
        alive[index + 1:] &= ~(overlaps > threshold)  # NaN (empty boxes) never suppresses
        following = torch.nonzero(alive[index + 1:], as_tuple=True)[0]
        if following.numel() == 0:
            break
        index = index + 1 + int(following[0])
    keep[start:start + size] = alive


def _suppress_chunk(boxes: torch.Tensor, thresholds: torch.Tensor, order: torch.Tensor,
                    starts: torch.Tensor, sizes: torch.Tensor, width: int,
                    keep: torch.Tensor) -> None:
    """Run NMS for groups laid out as rows of a (G, width) table; writes into ``keep``."""
    rank = torch.arange(width, device=boxes.device)
    valid = rank[None, :] < sizes[:, None]  # (G, M)
    slots = (starts[:, None] + rank[None, :]).clamp(max=order.numel() - 1)  # (G, M)
    table = boxes[order[slots]]  # (G, M, 4)
    above = rank[:, None] < rank[None, :]  # (M, M): i ranked above j
    threshold = thresholds[slots[:, :1]]  # (G, 1): every box of a group shares it
    overlaps = (box_iou_matrix(table, table) > threshold[:, :, None]) & above & valid[:, :, None]
    survive = valid
    while True:
        suppressed = (overlaps & survive[:, :, None]).any(dim=1)  # (G, M)
        updated = valid & ~suppressed
        if torch.equal(updated, survive):
            break
        survive = updated
    keep[slots[valid]] = survive[valid]
