"""Class-aware non-maximum suppression in plain torch (no torchvision on CPU here).

Greedy NMS — the highest-scoring box wins, every box of the same group overlapping it
by more than the threshold goes, repeat — has a closed form that vectorizes: box ``j``
survives iff no *surviving* box ``i`` ranked above it in its group overlaps it. That
recursion has exactly one solution, and iterating it from "everything survives"
reaches it after as many rounds as the longest chain of boxes suppressing each other
(usually 2-4), each round one boolean matrix product per group. So the result is the
exact greedy answer, for every group of every image at once, with no time limit.

The same holds for any overlap measure, so darknet's DIoU-NMS (``diounms_sort``: a box
goes when IoU minus (centre distance / enclosing diagonal)^beta exceeds the threshold)
runs through the same code with :func:`box_diou_matrix` in place of IoU.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# Upper bound on elements of the per-chunk (groups, M, M) IoU matrix (~64 MiB in float32).
_CHUNK_ELEMENTS = 1 << 24
# Groups larger than this (rare: thousands of boxes of one class in one image) are
# suppressed box by box instead, in O(M) memory.
_LARGE_GROUP = 2048

# An overlap measure: (..., N, 4) and (..., M, 4) x1y1x2y2 boxes -> (..., N, M).
Overlap = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _intersection_and_union(a: torch.Tensor,
                            b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Intersection and union areas of every pair of x1y1x2y2 boxes -> two (..., N, M)."""
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    left_top = torch.maximum(a[..., :, None, :2], b[..., None, :, :2])
    right_bottom = torch.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
    wh = (right_bottom - left_top).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter, area_a[..., :, None] + area_b[..., None, :] - inter


def box_iou_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of every pair of (..., N, 4) and (..., M, 4) x1y1x2y2 boxes -> (..., N, M)."""
    inter, union = _intersection_and_union(a, b)
    return inter / union


def box_diou_matrix(a: torch.Tensor, b: torch.Tensor, beta: float) -> torch.Tensor:
    """darknet's box_diounms for every pair of x1y1x2y2 boxes -> (..., N, M).

    IoU (0 where the boxes do not meet or have no area, as box_iou) minus (d / c)^beta,
    d the squared distance of the centres, c the squared diagonal of the smallest box
    enclosing both; where c is 0, the IoU alone.
    """
    inter, union = _intersection_and_union(a, b)
    iou = torch.where((inter > 0) & (union != 0), inter / union, 0)  # (..., N, M)
    enclosing = (torch.maximum(a[..., :, None, 2:], b[..., None, :, 2:])
                 - torch.minimum(a[..., :, None, :2], b[..., None, :, :2]))  # (..., N, M, 2)
    diagonal = (enclosing * enclosing).sum(-1)
    centre_a = (a[..., :2] + a[..., 2:]) / 2
    centre_b = (b[..., :2] + b[..., 2:]) / 2
    offset = centre_a[..., :, None, :] - centre_b[..., None, :, :]  # (..., N, M, 2)
    distance = (offset * offset).sum(-1)
    penalty = (distance / torch.where(diagonal == 0, 1, diagonal)).pow(beta)
    return torch.where(diagonal == 0, iou, iou - penalty)


def darknet_diou_beta(nms_kind: str, beta_nms: float) -> float | None:
    """The DIoU exponent darknet's NMS uses for a [yolo] ``nms_kind``; None for IoU.

    ``default`` is do_nms_sort (IoU). The others are diounms_sort, which suppresses on
    box_diounms(beta_nms) for ``diounms`` and on box_diou, whose exponent is a fixed 0.6,
    for ``greedynms`` — so the fork's "greedy" NMS is DIoU-NMS too.
    """
    if nms_kind == "default":
        return None
    return beta_nms if nms_kind == "diounms" else 0.6


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor,
                iou_threshold: float | torch.Tensor,
                diou_beta: float | None = None) -> torch.Tensor:
    """Greedy NMS run independently within each group (e.g. image x class).

    ``boxes`` (N, 4) x1y1x2y2, ``scores`` (N,), ``groups`` (N,) integers; a box is
    suppressed by a better one of its group overlapping it by more than
    ``iou_threshold`` (a float, or (N,) per box: one value per group). The overlap is
    IoU, or with ``diou_beta`` darknet's DIoU with that exponent (not invariant to
    scaling x and y differently: darknet measures it on boxes relative to the image).
    Returns the indices of the kept boxes, highest score first (ties keep input order).
    """
    if diou_beta is None:
        overlap: Overlap = box_iou_matrix
    else:
        def overlap(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return box_diou_matrix(a, b, diou_beta)
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
                              keep, overlap)
        position += 1
    while position < len(by_size):
        widest = sizes_list[by_size[position]]
        take = max(1, _CHUNK_ELEMENTS // (widest * widest))
        chunk = torch.tensor(by_size[position:position + take], device=scores.device)
        position += take
        _suppress_chunk(boxes, thresholds, order, starts[chunk], sizes[chunk], widest, keep,
                        overlap)

    kept = order[keep]
    return kept[torch.argsort(scores[kept], descending=True, stable=True)]


def _suppress_large_group(boxes: torch.Tensor, thresholds: torch.Tensor, order: torch.Tensor,
                          start: int, size: int, keep: torch.Tensor, overlap: Overlap) -> None:
    """Plain greedy NMS for one big group: each survivor removes what it overlaps."""
    members = boxes[order[start:start + size]]  # (M, 4), best first
    threshold = thresholds[start]
    alive = torch.ones(size, dtype=torch.bool, device=boxes.device)
    index = 0
    while index < size:
        overlaps = overlap(members[index:index + 1], members[index + 1:])[0]  # (M - i - 1,)
        alive[index + 1:] &= ~(overlaps > threshold)  # NaN (empty boxes) never suppresses
        following = torch.nonzero(alive[index + 1:], as_tuple=True)[0]
        if following.numel() == 0:
            break
        index = index + 1 + int(following[0])
    keep[start:start + size] = alive


def _suppress_chunk(boxes: torch.Tensor, thresholds: torch.Tensor, order: torch.Tensor,
                    starts: torch.Tensor, sizes: torch.Tensor, width: int,
                    keep: torch.Tensor, overlap: Overlap) -> None:
    """Run NMS for groups laid out as rows of a (G, width) table; writes into ``keep``."""
    rank = torch.arange(width, device=boxes.device)
    valid = rank[None, :] < sizes[:, None]  # (G, M)
    slots = (starts[:, None] + rank[None, :]).clamp(max=order.numel() - 1)  # (G, M)
    table = boxes[order[slots]]  # (G, M, 4)
    above = rank[:, None] < rank[None, :]  # (M, M): i ranked above j
    threshold = thresholds[slots[:, :1]]  # (G, 1): every box of a group shares it
    overlaps = (overlap(table, table) > threshold[:, :, None]) & above & valid[:, :, None]
    survive = valid
    while True:
        suppressed = (overlaps & survive[:, :, None]).any(dim=1)  # (G, M)
        updated = valid & ~suppressed
        if torch.equal(updated, survive):
            break
        survive = updated
    keep[slots[valid]] = survive[valid]
