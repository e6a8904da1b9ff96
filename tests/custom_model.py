"""A genuine custom model for tests: yolov3-tiny's official weights with a new 3-class
head (person, car, dog), made by keeping only those classes' channels in the two
convolutions that feed the [yolo] layers — a trained network, not random weights, whose
boxes for those classes must be the 80-class model's."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from engine import parse_cfg, read_darknet_weights, write_darknet_weights
from engine.cfg import ConvSpec, YoloSpec, parse_cfg_text

KEPT = ("person", "car", "dog")
COCO_IDS = (0, 2, 16)  # their indices among coco.names' 80


def _kept_channels(anchors: int, classes: int) -> list[int]:
    per_anchor = 5 + classes
    return [a * per_anchor + c for a in range(anchors)
            for c in (0, 1, 2, 3, 4, *(5 + k for k in COCO_IDS))]


def write_three_class_model(tiny_paths, folder: Path, *, suffix: str = "") -> dict[str, Path]:
    """Write tiny3{suffix}.cfg/.weights/.names in ``folder``; returns the three paths."""
    folder.mkdir(parents=True, exist_ok=True)
    text = tiny_paths.cfg.read_text()
    assert text.count("filters=255") == 2 and text.count("classes=80") == 2
    new_text = text.replace("filters=255", f"filters={3 * (5 + len(KEPT))}").replace(
        "classes=80", f"classes={len(KEPT)}")
    spec = parse_cfg(tiny_paths.cfg)
    new_spec = parse_cfg_text(new_text, "tiny3.cfg")
    header, blocks = read_darknet_weights(tiny_paths.weights, spec)
    convs = [layer for layer in spec.layers if isinstance(layer, ConvSpec)]
    heads = {index - 1 for index, layer in enumerate(spec.layers) if isinstance(layer, YoloSpec)}
    head_convs = {convs.index(spec.layers[index]) for index in heads}
    kept = _kept_channels(3, 80)
    cut = []
    for index, block in enumerate(blocks):
        if index in head_convs:
            assert block.scales is None  # the head convolutions have no batch norm
            weights = block.weights.reshape(255, -1)[kept]
            block = dataclasses.replace(block, biases=block.biases[kept],
                                        weights=np.ascontiguousarray(weights).reshape(-1))
        cut.append(block)
    paths = {"cfg": folder / f"tiny3{suffix}.cfg", "weights": folder / f"tiny3{suffix}.weights",
             "names": folder / f"tiny3{suffix}.names"}
    paths["cfg"].write_text(new_text)
    write_darknet_weights(paths["weights"], new_spec, cut, header)
    paths["names"].write_text("\n".join(KEPT) + "\n")
    return paths
