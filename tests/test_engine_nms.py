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
