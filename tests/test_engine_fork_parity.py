"""The maintained fork's networks (../shared/testdata/darknet/alexeyab) against OpenCV DNN.

No trained weights for them are at hand, so each test writes random ones in darknet's
format, seeded, and calibrated on the test image so that every convolution's output has
a standard deviation of 1: activations stay O(1) from the first layer to the heads,
where a wrong activation, slice or decode shows (plain random weights shrink them to
about 0.1 within a few layers). Batch-norm variances are drawn large, where pjreddie's
sqrt(var) + 1e-6 — which OpenCV computes — and the fork's sqrt(var + 1e-5) agree to
float precision; the fork's own is checked in test_engine_layers.

OpenCV reads all seven cfgs. Big ones run at 128 x 128 (the parser's ``input_size``;
OpenCV gets a copy of the cfg with that size written in), so that the module stays short
on two cores.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from engine.cfg import ConvSpec, NetworkSpec, YoloSpec, parse_cfg
from engine.detector import Detector, read_names
from engine.image import decode_image
from engine.model import Darknet
from engine.weights import (
    ConvWeights,
    random_darknet_weights,
    read_darknet_weights,
    write_darknet_weights,
)
from tests.test_engine_nms import reference_diounms_sort
from tests.test_engine_parity import assert_heads_match, opencv_heads

pytestmark = pytest.mark.slow

INPUT_SIZES = {
    "yolov3-tiny-prn.cfg": 256, "yolov4-tiny.cfg": 256, "yolov4-tiny-3l.cfg": 256,
    "yolov7-tiny.cfg": 256, "yolov4.cfg": 128, "yolov4-csp.cfg": 128, "yolov7.cfg": 128,
}


def sized_copy(cfg: Path, size: int, folder: Path, *, net_options: str = "",
               replace: tuple[str, str] | None = None) -> Path:
    """The cfg with width and height set to ``size`` (and other edits), for OpenCV."""
    text = cfg.read_text()
    text = re.sub(r"(?m)^width=\d+", f"width={size}",
                  re.sub(r"(?m)^height=\d+", f"height={size}", text))
    text = text.replace("[net]\n", f"[net]\n{net_options}", 1)
    if replace:
        text = text.replace(*replace)
    copy = folder / cfg.name
    copy.write_text(text)
    return copy


def calibrated_weights(network: Darknet, blob: torch.Tensor, seed: int) -> list[ConvWeights]:
    """Random darknet weights scaled so that each conv's output has std 1 on ``blob``.

    One forward pass: a hook rescales each conv's output as it is computed, so the layers
    after it see the calibrated input; the factors then go into the darknet blocks (BN
    scale and bias, or kernel and bias), which compute exactly that.
    """
    blocks = [block if block.scales is None else
              dataclasses.replace(block, rolling_variance=block.rolling_variance * 100)
              for block in random_darknet_weights(network.spec, seed=seed)]
    network.load_weights(blocks)
    factors: list[np.float32] = []

    def rescale(module, inputs, output):
        factors.append(np.float32(1 / float(output.std())))
        return output * float(factors[-1])

    hooks = [conv.conv.register_forward_hook(rescale) for conv in network.convs]
    with torch.inference_mode():
        network(blob)
    for hook in hooks:
        hook.remove()
    return [dataclasses.replace(block, biases=block.biases * factor,
                                **({"scales": block.scales * factor} if block.scales is not None
                                   else {"weights": block.weights * factor}))
            for block, factor in zip(blocks, factors, strict=True)]


def random_detector(spec: NetworkSpec, image: np.ndarray, weights: Path, names: list[str],
                    objectness_bias: float = 0.0) -> tuple[Detector, torch.Tensor]:
    """A detector whose calibrated random weights went through a darknet weights file,
    and its input blob for ``image``."""
    # The module itself (torch): its weights are replaced below, after construction, which
    # an exported runtime (built from the weights it was given) would not see.
    detector = Detector(Darknet(spec), names, device="cpu", precision="fp32", runtime="torch")
    blob, _ = detector.preprocess([image])
    blocks = calibrated_weights(detector.network, blob, seed=11)
    heads = {index - 1 for index, layer in enumerate(spec.layers) if isinstance(layer, YoloSpec)}
    convs = [index for index, layer in enumerate(spec.layers) if isinstance(layer, ConvSpec)]
    for index, block in zip(convs, blocks, strict=True):
        if index in heads:
            block.biases[4::5 + spec.classes] += np.float32(objectness_bias)
    write_darknet_weights(weights, spec, blocks)
    detector.network.load_weights(read_darknet_weights(weights, spec)[1])
    return detector, blob


@pytest.mark.parametrize("name", sorted(INPUT_SIZES))
def test_raw_heads_match_opencv(tmp_path, darknet_dir, name):
    cfg = darknet_dir / "alexeyab" / name
    size = INPUT_SIZES[name]
    spec = parse_cfg(cfg, input_size=size)
    weights = tmp_path / "random.weights"
    detector, blob = random_detector(spec, decode_image(darknet_dir / "horses.jpg"), weights,
                                     read_names(darknet_dir / "coco.names"))
    ours = detector.forward(blob)
    theirs = opencv_heads(sized_copy(cfg, size, tmp_path), weights, blob.numpy())
    compared = assert_heads_match(ours, theirs)
    assert compared > 1000, "O(1) activations should give many class scores above 0.2"


def opencv_detections(heads: list[np.ndarray], spec: NetworkSpec, image: np.ndarray,
                      threshold: float, nms_threshold: float) -> list[tuple]:
    """Detections from OpenCV's raw rows, post-processed as darknet's detector does:
    (box, class) pairs above ``threshold``, the fork's correct_yolo_boxes (letterbox or
    stretch), then OpenCV's NMSBoxesBatched for nms_kind=default or darknet's
    diounms_sort (the plain reference) for the DIoU kinds; boxes clipped to the image."""
    rows = np.concatenate(heads).astype(np.float64)  # (N, 5 + C): cx, cy, w, h, obj, scores
    height, width = image.shape[:2]
    net_w, net_h = spec.width, spec.height
    new_w, new_h = net_w, net_h
    if spec.letter_box:
        if net_w / width < net_h / height:
            new_w, new_h = net_w, height * net_w // width
        else:
            new_w, new_h = width * net_h // height, net_h
    relative = np.stack([(rows[:, 0] - (net_w - new_w) / 2 / net_w) / (new_w / net_w),
                         (rows[:, 1] - (net_h - new_h) / 2 / net_h) / (new_h / net_h),
                         rows[:, 2] / (new_w / net_w), rows[:, 3] / (new_h / net_h)], axis=1)
    probs = np.where((rows[:, 5:] > threshold) & (rows[:, 4:5] > threshold), rows[:, 5:], 0)
    candidates = probs.any(axis=1)
    relative, probs = relative[candidates], probs[candidates]
    nms_kind, beta_nms = spec.nms
    if nms_kind == "default":
        box, cls = np.nonzero(probs)
        rects = np.stack([(relative[box, 0] - relative[box, 2] / 2) * width,
                          (relative[box, 1] - relative[box, 3] / 2) * height,
                          relative[box, 2] * width, relative[box, 3] * height], axis=1)
        picked = np.asarray(cv2.dnn.NMSBoxesBatched(rects.tolist(), probs[box, cls].tolist(),
                                                    cls.tolist(), threshold, nms_threshold),
                            dtype=np.int64).reshape(-1)
        kept = np.zeros_like(probs)
        kept[box[picked], cls[picked]] = probs[box[picked], cls[picked]]
    else:
        kept = reference_diounms_sort(relative, probs, nms_threshold, nms_kind, beta_nms)
    found = []
    for box, cls in zip(*np.nonzero(kept), strict=True):
        x, y, w, h = relative[box]
        corners = np.clip([(x - w / 2) * width, (y - h / 2) * height, (x + w / 2) * width,
                           (y + h / 2) * height], 0, [width, height, width, height])
        found.append((int(cls), float(kept[box, cls]), *corners))
    return found


def assert_same_detections(ours: list[tuple], theirs: list[tuple]) -> None:
    """The two lists pair up one to one: the same class, box corners within 0.05 px
    (boxes clipped to nothing included) and scores within 1e-4."""
    assert len(ours) == len(theirs)
    for cls in {d[0] for d in ours} | {d[0] for d in theirs}:
        mine = np.array([d[1:] for d in ours if d[0] == cls])  # (n, 5): score, x1 y1 x2 y2
        other = np.array([d[1:] for d in theirs if d[0] == cls])
        assert mine.shape == other.shape, f"class {cls}"
        distance = np.abs(mine[:, None, 1:] - other[None, :, 1:]).max(axis=-1)  # (n, n)
        nearest = distance.argmin(axis=1)
        assert sorted(nearest.tolist()) == list(range(len(other))), f"class {cls}"
        np.testing.assert_allclose(mine[:, 1:], other[nearest, 1:], atol=0.05)
        np.testing.assert_allclose(mine[:, 0], other[nearest, 0], atol=1e-4)


@pytest.mark.parametrize("nms_kind", ["default", "diounms"])
@pytest.mark.parametrize("letter_box", [0, 1])
def test_detections_match_opencv_postprocessing(tmp_path, darknet_dir, letter_box, nms_kind):
    # yolov4-tiny with letter_box written in (0: the fork's stretch) and its greedynms
    # replaced, at 256 x 256. min_confidence 0.3 is above OpenCV's 0.2 truncation.
    cfg = sized_copy(darknet_dir / "alexeyab" / "yolov4-tiny.cfg", 256, tmp_path,
                     net_options=f"letter_box={letter_box}\n",
                     replace=("nms_kind=greedynms", f"nms_kind={nms_kind}"))
    spec = parse_cfg(cfg)
    assert spec.letter_box is bool(letter_box) and spec.nms == (nms_kind, 0.6)
    image = decode_image(darknet_dir / "dog.jpg")  # 768 x 576: bars when letterboxed
    weights = tmp_path / "random.weights"
    detector, blob = random_detector(spec, image, weights, read_names(darknet_dir / "coco.names"),
                                     objectness_bias=-1.0)  # a few hundred boxes, not all
    found = detector.detect([image], min_confidence=0.3, iou_threshold=0.45,
                            max_detections=10_000)[0]
    ours = [(d.class_id, d.confidence, d.x1, d.y1, d.x2, d.y2) for d in found]
    theirs = opencv_detections(opencv_heads(cfg, weights, blob.numpy()), spec, image, 0.3, 0.45)
    assert len(theirs) > 100
    assert_same_detections(ours, theirs)
