"""Raw YOLO head outputs equal OpenCV DNN's (readNetFromDarknet) on the same input blob.

OpenCV's region layer writes rows [cx, cy, w, h, objectness, objectness x class
probability...] per head, ordered by (y, x, anchor), and zeroes class scores at or
below its threshold (0.2): class scores are compared where OpenCV's is non-zero.
"""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from engine.cfg import parse_cfg
from engine.detector import Detector, read_names
from engine.image import decode_image
from engine.model import Darknet
from engine.weights import (
    random_darknet_weights,
    read_darknet_weights,
    write_darknet_weights,
)

TOLERANCE = 1e-3


def as_opencv_rows(head: torch.Tensor) -> np.ndarray:
    """(1, A, H, W, 5 + C) -> OpenCV's (H * W * A, 5 + C) layout and class scores."""
    rows = head[0].permute(1, 2, 0, 3).reshape(-1, head.shape[-1]).numpy().copy()
    rows[:, 5:] *= rows[:, 4:5]
    return rows


def assert_heads_match(ours: list[torch.Tensor], theirs: list[np.ndarray]) -> int:
    assert len(ours) == len(theirs)
    compared_scores = 0
    for head, reference in zip(ours, theirs, strict=True):
        rows = as_opencv_rows(head)
        assert rows.shape == reference.shape
        # Absolute within 1e-3; relative for the few w/h values above 1 (exp of a raw output).
        np.testing.assert_allclose(rows[:, :5], reference[:, :5], rtol=TOLERANCE, atol=TOLERANCE)
        scored = reference[:, 5:] > 0
        np.testing.assert_allclose(rows[:, 5:][scored], reference[:, 5:][scored],
                                   rtol=TOLERANCE, atol=TOLERANCE)
        compared_scores += int(scored.sum())
    return compared_scores


def opencv_heads(cfg: Path, weights: Path, blob: np.ndarray) -> list[np.ndarray]:
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    net.setInput(blob)
    return list(net.forward(net.getUnconnectedOutLayersNames()))


def test_tiny_with_official_weights_matches_opencv_on_a_real_image(tiny_paths, darknet_dir):
    detector = Detector.from_files(tiny_paths.cfg, tiny_paths.weights, tiny_paths.names,
                                   device="cpu", precision="fp32", runtime="torch")
    blob, _ = detector.preprocess([decode_image(darknet_dir / "dog.jpg")])
    ours = detector.forward(blob)
    compared = assert_heads_match(ours, opencv_heads(tiny_paths.cfg, tiny_paths.weights,
                                                     blob.numpy()))
    assert compared > 0, "the dog image should give class scores above OpenCV's 0.2 cut"


@pytest.mark.parametrize("name", ["yolov3.cfg", "yolov3-spp.cfg"])
def test_full_cfgs_with_random_weights_match_opencv(tmp_path, darknet_dir, name):
    # Both at 416 x 416 (yolov3-spp's file says 608; OpenCV takes the size from the cfg).
    text = (darknet_dir / name).read_text()
    text = re.sub(r"(?m)^width=\d+", "width=416", re.sub(r"(?m)^height=\d+", "height=416", text))
    cfg = tmp_path / name
    cfg.write_text(text)
    spec = parse_cfg(cfg)
    weights = tmp_path / "random.weights"
    write_darknet_weights(weights, spec, random_darknet_weights(spec, seed=11))
    network = Darknet(spec).eval()
    network.load_weights(read_darknet_weights(weights, spec)[1])
    names = read_names(darknet_dir / "coco.names")
    detector = Detector(network, names, device="cpu", precision="fp32", runtime="torch")
    blob, _ = detector.preprocess([decode_image(darknet_dir / "horses.jpg")])
    ours = detector.forward(blob)
    assert [tuple(h.shape[2:4]) for h in ours] == [(13, 13), (26, 26), (52, 52)]
    assert_heads_match(ours, opencv_heads(cfg, weights, blob.numpy()))
