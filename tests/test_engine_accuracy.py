"""COCO mAP on the shared evaluation set, through the `evaluate` command."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command

DARKNET_MAP50 = 0.293  # darknet's own yolov3-tiny on coco128_val2017
TOLERANCE = 0.005  # half a point


def evaluate(coco128_dir, *extra) -> dict:
    out = io.StringIO()
    call_command("evaluate", "--images", str(coco128_dir / "images"),
                 "--coco-json", str(coco128_dir / "instances_val2017_first128_from_yolo.json"),
                 "--json", *extra, stdout=out)
    return json.loads(out.getvalue())


@pytest.fixture(scope="module")
def fp32_result(coco128_dir, tiny_paths) -> dict:
    return evaluate(coco128_dir, "--precision", "fp32", "--device", "cpu")


@pytest.mark.slow
def test_fp32_map_is_within_half_a_point_of_darknet(fp32_result):
    assert fp32_result["images"] == 128
    assert abs(fp32_result["map50"] - DARKNET_MAP50) <= TOLERANCE
    assert 0.15 < fp32_result["map50_95"] < fp32_result["map50"]


@pytest.mark.slow
def test_bf16_map_is_within_half_a_point_of_fp32(coco128_dir, fp32_result, tiny_bf16):
    bf16 = evaluate(coco128_dir, "--precision", "bf16", "--device", "cpu")
    assert bf16["precision"] == "bf16"
    assert abs(bf16["map50"] - fp32_result["map50"]) <= TOLERANCE


@pytest.mark.slow
def test_yolo_txt_labels_give_the_same_score_as_the_coco_json(coco128_dir, fp32_result):
    out = io.StringIO()
    call_command("evaluate", "--images", str(coco128_dir / "images"), "--labels",
                 str(coco128_dir / "labels"), "--json", "--precision", "fp32", "--device", "cpu",
                 stdout=out)
    assert json.loads(out.getvalue())["map50"] == pytest.approx(fp32_result["map50"], abs=1e-4)
