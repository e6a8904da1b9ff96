"""Batched detection: per-image options, batch-size invariance, well-formed results."""

from __future__ import annotations

import pytest

from engine.detector import Detector
from engine.image import decode_image

NAMES = ["dog.jpg", "eagle.jpg", "giraffe.jpg", "horses.jpg", "kite.jpg", "person.jpg",
         "scream.jpg"]


@pytest.fixture(scope="module")
def images(darknet_dir):
    return [decode_image(darknet_dir / name) for name in NAMES]


def summary(found):
    return [[(d.class_id, round(d.confidence, 3), round(d.x1), round(d.y1), round(d.x2),
              round(d.y2)) for d in per_image] for per_image in found]


def test_one_batch_of_mixed_sizes_equals_one_image_at_a_time(tiny_paths, images):
    one = Detector.from_files(tiny_paths.cfg, tiny_paths.weights, tiny_paths.names,
                              device="cpu", precision="fp32", max_batch=1)
    many = Detector.from_files(tiny_paths.cfg, tiny_paths.weights, tiny_paths.names,
                               device="cpu", precision="fp32", max_batch=8)
    assert summary(many.detect(images)) == summary(one.detect(images))


def test_each_image_of_a_batch_gets_its_own_options(tiny_fp32, images):
    options = [tiny_fp32.options(min_confidence=0.1, classes=["dog"]),
               tiny_fp32.options(min_confidence=0.5),
               tiny_fp32.options(iou_threshold=0.9, max_detections=2),
               tiny_fp32.options()]
    together = tiny_fp32.detect_each(images[:4], options)
    alone = [tiny_fp32.detect_each([image], [chosen])[0]
             for image, chosen in zip(images[:4], options, strict=True)]
    assert summary(together) == summary(alone)
    assert {d.label for d in together[0]} == {"dog"}
    assert all(d.confidence > 0.5 for d in together[1])
    assert len(together[2]) == 2


def test_results_are_sorted_capped_and_inside_the_image(tiny_fp32, images):
    for image, found in zip(images, tiny_fp32.detect(images, min_confidence=0.01,
                                                      max_detections=25), strict=True):
        height, width = image.shape[:2]
        assert len(found) <= 25
        assert [d.confidence for d in found] == sorted((d.confidence for d in found),
                                                       reverse=True)
        for d in found:
            assert 0 <= d.x1 <= d.x2 <= width and 0 <= d.y1 <= d.y2 <= height
            assert tiny_fp32.names[d.class_id] == d.label


def test_no_images_give_no_results(tiny_fp32):
    assert tiny_fp32.detect([]) == []


def test_auto_precision_on_the_cpu_follows_the_cpu(tiny_paths, monkeypatch, tmp_path):
    import torch

    from engine import detector as detector_module

    # An empty export folder: no INT8 model has passed its check for these weights (one
    # that has would make auto pick int8; tests/test_engine_int8.py covers that).
    auto = Detector.from_files(tiny_paths.cfg, tiny_paths.weights, tiny_paths.names,
                               device="cpu", precision="auto", cache_dir=tmp_path)
    wanted = "bf16" if detector_module.cpu_prefers_bf16() else "fp32"
    assert auto.precision == wanted
    assert next(auto.network.parameters()).dtype == {
        "fp32": torch.float32, "bf16": torch.bfloat16}[wanted]
    # The rule: native bf16 alone is not enough; AMX, or AMD's AVX512-BF16, is.
    cpu = torch.device("cpu")
    for native, amx, vendor, expected in [
            (False, False, "AuthenticAMD", "fp32"), (True, False, "AuthenticAMD", "bf16"),
            (True, False, "GenuineIntel", "fp32"), (True, True, "GenuineIntel", "bf16")]:
        monkeypatch.setattr(detector_module, "cpu_has_native_bf16", lambda native=native: native)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda amx=amx: amx)
        monkeypatch.setattr(detector_module, "cpu_vendor", lambda vendor=vendor: vendor)
        assert detector_module.resolve_precision("auto", cpu) == expected
    assert detector_module.resolve_precision("auto", torch.device("cuda")) == "fp16"
