"""Class-aware NMS: exact greedy results, for every group at once, on any input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine import nms


def reference_nms(boxes: np.ndarray, scores: np.ndarray, groups: np.ndarray,
                  threshold: float) -> list[int]:
    """Plain greedy NMS, one group at a time: the textbook definition."""
    kept = []
    for group in np.unique(groups):
        members = sorted(np.nonzero(groups == group)[0], key=lambda i: -scores[i])
        alive = list(members)
        while alive:
            best = alive.pop(0)
            kept.append(best)
            survivors = []
            for other in alive:
                x1 = max(boxes[best, 0], boxes[other, 0])
                y1 = max(boxes[best, 1], boxes[other, 1])
                x2 = min(boxes[best, 2], boxes[other, 2])
                y2 = min(boxes[best, 3], boxes[other, 3])
                inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
                area = lambda i: (boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1])  # noqa: E731
                if inter / (area(best) + area(other) - inter) <= threshold:
                    survivors.append(other)
            alive = survivors
    return sorted(kept, key=lambda i: -scores[i])


def random_case(seed: int):
    rng = np.random.default_rng(seed)
    count = int(rng.integers(0, 400))
    centres = rng.uniform(0, 200, (count, 2))
    sizes = rng.uniform(2, 80, (count, 2))
    boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1).astype(np.float32)
    scores = rng.uniform(0, 1, count).astype(np.float32)
    groups = rng.integers(0, int(rng.integers(1, 12)), count)
    return boxes, scores, groups, float(rng.uniform(0.1, 0.9))


@pytest.mark.parametrize("seed", range(150))
def test_it_equals_plain_greedy_nms(seed):
    boxes, scores, groups, threshold = random_case(seed)
    kept = nms.batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores),
                           torch.from_numpy(groups), threshold)
    assert kept.tolist() == reference_nms(boxes, scores, groups, threshold)


def test_it_equals_plain_greedy_nms_when_split_into_many_chunks(monkeypatch):
    monkeypatch.setattr(nms, "_CHUNK_ELEMENTS", 64)
    for seed in range(20):
        boxes, scores, groups, threshold = random_case(1000 + seed)
        kept = nms.batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores),
                               torch.from_numpy(groups), threshold)
        assert kept.tolist() == reference_nms(boxes, scores, groups, threshold)


def test_a_long_chain_of_suppressions_is_resolved_exactly():
    # Each box overlaps only its neighbours: greedy keeps every other one.
    count = 200
    left = np.arange(count, dtype=np.float32) * 5
    boxes = np.stack([left, np.zeros(count), left + 10, np.full(count, 10)], 1).astype(np.float32)
    scores = np.linspace(1, 0.1, count).astype(np.float32)
    groups = np.zeros(count, dtype=np.int64)
    kept = nms.batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores),
                           torch.from_numpy(groups), 0.3)
    assert kept.tolist() == list(range(0, count, 2))
    assert kept.tolist() == reference_nms(boxes, scores, groups, 0.3)


def test_boxes_of_different_groups_never_suppress_each_other():
    boxes = torch.tensor([[0, 0, 10, 10]] * 3, dtype=torch.float32)
    kept = nms.batched_nms(boxes, torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 1, 0]), 0.5)
    assert kept.tolist() == [0, 1]


def test_empty_input_gives_empty_output():
    kept = nms.batched_nms(torch.empty((0, 4)), torch.empty(0), torch.empty(0, dtype=torch.long),
                           0.45)
    assert kept.numel() == 0 and kept.dtype == torch.long


def test_large_groups_are_suppressed_box_by_box_with_the_same_result(monkeypatch):
    monkeypatch.setattr(nms, "_LARGE_GROUP", 16)
    for seed in range(30):
        boxes, scores, groups, threshold = random_case(2000 + seed)
        kept = nms.batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores),
                               torch.from_numpy(groups), threshold)
        assert kept.tolist() == reference_nms(boxes, scores, groups, threshold)


def test_thousands_of_boxes_in_one_group_take_bounded_memory_and_time():
    rng = np.random.default_rng(7)
    count = 12_000  # beyond the padded-matrix path: 12k x 12k floats would be 576 MB
    centres = rng.uniform(0, 400, (count, 2))
    boxes = np.concatenate([centres - 20, centres + 20], axis=1).astype(np.float32)
    scores = rng.uniform(0, 1, count).astype(np.float32)
    kept = nms.batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores),
                           torch.zeros(count, dtype=torch.long), 0.45)
    assert 0 < kept.numel() < count
    survivors = torch.from_numpy(boxes)[kept]
    assert (nms.box_iou_matrix(survivors, survivors).triu(1) <= 0.45).all()


# --- darknet's DIoU-NMS (the fork's diounms_sort, src/box.c) -------------------------

def _overlap(x1: float, w1: float, x2: float, w2: float) -> float:
    left = max(x1 - w1 / 2, x2 - w2 / 2)
    right = min(x1 + w1 / 2, x2 + w2 / 2)
    return right - left


def _box_iou(a: tuple, b: tuple) -> float:
    w = _overlap(a[0], a[2], b[0], b[2])
    h = _overlap(a[1], a[3], b[1], b[3])
    intersection = 0.0 if w < 0 or h < 0 else w * h
    union = a[2] * a[3] + b[2] * b[3] - intersection
    if intersection == 0 or union == 0:
        return 0.0
    return intersection / union


def _box_diounms(a: tuple, b: tuple, beta: float) -> float:
    top = min(a[1] - a[3] / 2, b[1] - b[3] / 2)
    bottom = max(a[1] + a[3] / 2, b[1] + b[3] / 2)
    left = min(a[0] - a[2] / 2, b[0] - b[2] / 2)
    right = max(a[0] + a[2] / 2, b[0] + b[2] / 2)
    c = (right - left) ** 2 + (bottom - top) ** 2
    iou = _box_iou(a, b)
    if c == 0:
        return iou
    d = (a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2
    return iou - (d / c) ** beta


def reference_diounms_sort(boxes: np.ndarray, probs: np.ndarray, thresh: float,
                           nms_kind: str, beta: float) -> np.ndarray:
    """darknet's diounms_sort, loop for loop: ``boxes`` (N, 4) centre x, y, w, h,
    ``probs`` (N, classes) with 0 for "below the threshold"; returns the probs left.

    greedynms suppresses on box_diou (the same formula with a fixed exponent of 0.6),
    diounms on box_diounms(beta_nms).
    """
    probs = probs.astype(np.float64)  # a copy, zeroed where darknet zeroes
    exponent = 0.6 if nms_kind == "greedynms" else beta
    dets = [(tuple(float(v) for v in box), row) for box, row in zip(boxes, probs, strict=True)]
    for k in range(probs.shape[1]):
        dets.sort(key=lambda det, k=k: -det[1][k])
        for i in range(len(dets)):
            if dets[i][1][k] == 0:
                continue
            a = dets[i][0]
            for j in range(i + 1, len(dets)):
                if _box_diounms(a, dets[j][0], exponent) > thresh:
                    dets[j][1][k] = 0
    return probs


def random_detections(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Boxes relative to an image (as darknet's NMS sees them) and thresholded probs."""
    rng = np.random.default_rng(seed)
    count = int(rng.integers(0, 120))
    boxes = np.concatenate([rng.uniform(0, 1, (count, 2)), rng.uniform(0.02, 0.5, (count, 2))],
                           axis=1)
    if count > 4:  # some boxes sharing a centre, and one box twice
        boxes[1, :2] = boxes[0, :2]
        boxes[3] = boxes[2]
    probs = rng.uniform(0, 1, (count, int(rng.integers(1, 6))))
    probs[probs < 0.4] = 0
    return boxes.astype(np.float32), probs.astype(np.float32)


def diou_nms_kept(boxes: np.ndarray, probs: np.ndarray, thresh: float,
                  beta: float) -> np.ndarray:
    """batched_nms with DIoU over every (box, class) with a probability: the probs left."""
    row, class_id = np.nonzero(probs)
    centres = torch.from_numpy(boxes[row])
    corners = torch.cat([centres[:, :2] - centres[:, 2:] / 2, centres[:, :2] + centres[:, 2:] / 2],
                        dim=1)
    kept = nms.batched_nms(corners, torch.from_numpy(probs[row, class_id]),
                           torch.from_numpy(class_id), thresh, diou_beta=beta).numpy()
    left = np.zeros_like(probs)
    left[row[kept], class_id[kept]] = probs[row[kept], class_id[kept]]
    return left


@pytest.mark.parametrize("seed", range(120))
def test_diou_nms_equals_darknets_diounms_sort(seed):
    boxes, probs = random_detections(seed)
    rng = np.random.default_rng(10_000 + seed)
    thresh, beta = float(rng.uniform(0.1, 0.8)), float(rng.uniform(0.3, 1.5))
    expected = reference_diounms_sort(boxes, probs, thresh, "diounms", beta)
    np.testing.assert_array_equal(diou_nms_kept(boxes, probs, thresh, beta) > 0, expected > 0)


@pytest.mark.parametrize("seed", range(30))
def test_greedynms_is_diou_with_the_fixed_exponent(seed):
    boxes, probs = random_detections(500 + seed)
    beta = nms.darknet_diou_beta("greedynms", beta_nms=1.3)  # box_diou ignores beta_nms
    assert beta == 0.6
    expected = reference_diounms_sort(boxes, probs, 0.45, "greedynms", 1.3)
    np.testing.assert_array_equal(diou_nms_kept(boxes, probs, 0.45, beta) > 0, expected > 0)


def test_the_nms_kinds_map_to_darknets_functions():
    assert nms.darknet_diou_beta("default", 0.6) is None  # do_nms_sort: plain IoU
    assert nms.darknet_diou_beta("diounms", 0.8) == 0.8
    assert nms.darknet_diou_beta("greedynms", 0.8) == 0.6


def test_diou_suppresses_less_than_iou_for_distant_centres():
    # Box 1 overlaps the best one by IoU 0.5, with its centre a quarter of the height
    # away: DIoU's centre penalty spares it. Box 2 overlaps by 0.67 and goes either way.
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 5], [0, 0, 10, 10 / 1.5]],
                         dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7])
    groups = torch.zeros(3, dtype=torch.long)
    assert nms.batched_nms(boxes, scores, groups, 0.45).tolist() == [0]
    assert nms.batched_nms(boxes, scores, groups, 0.45, diou_beta=0.6).tolist() == [0, 1]


def test_diou_nms_agrees_box_by_box_on_large_groups(monkeypatch):
    monkeypatch.setattr(nms, "_LARGE_GROUP", 8)
    for seed in range(20):
        boxes, probs = random_detections(900 + seed)
        expected = reference_diounms_sort(boxes, probs, 0.5, "diounms", 0.6)
        np.testing.assert_array_equal(diou_nms_kept(boxes, probs, 0.5, 0.6) > 0, expected > 0)
