"""Inference runtimes: OpenVINO (letterboxing in its graph) and ONNX Runtime give
PyTorch's decoded heads, their exports are kept on disk and read again, OpenVINO runs
passes side by side, and ``auto`` is a rule that holds where a package is missing.

Every entry of a decoded head is O(1): box centres and sizes are fractions of the
network input (a size passes 1 only for a box larger than the input, by a few times at
most) and objectness and class probabilities lie in [0, 1]. So one absolute tolerance,
1e-3, holds for all of them, with no class-score threshold to pick entries.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from django.conf import settings

from engine import detector as detector_module
from engine import model_info, runtimes
from engine.cfg import parse_cfg
from engine.detector import Detector, resolve_runtime
from engine.image import decode_image
from engine.preprocess import ResizeTables, letterbox_batch, letterbox_tables
from engine.runtimes.cache import ExportCache
from engine.weights import random_darknet_weights, write_darknet_weights
from tests.conftest import require_runtime

IMAGES = ["dog.jpg", "eagle.jpg", "giraffe.jpg", "horses.jpg", "kite.jpg", "person.jpg",
          "scream.jpg"]
TOLERANCE = 1e-3
EXPORTED = ["openvino", "onnxruntime"]


@pytest.fixture(scope="module")
def demo_images(darknet_dir):
    return [decode_image(darknet_dir / name) for name in IMAGES]


@pytest.fixture(scope="module")
def reference_batch(tiny_fp32, demo_images):
    """The 7 demo images, letterboxed as one batch, and PyTorch fp32's heads for it."""
    batch, _ = tiny_fp32.preprocess(demo_images)
    return batch, tiny_fp32.forward(batch)


@pytest.fixture(params=EXPORTED)
def exported(request):
    return request.getfixturevalue(f"tiny_{request.param}")


def assert_heads_equal(ours: list[torch.Tensor], reference: list[torch.Tensor]) -> None:
    assert [head.shape for head in ours] == [head.shape for head in reference]
    for head, expected in zip(ours, reference, strict=True):
        assert head.dtype == torch.float32
        np.testing.assert_allclose(head.numpy(), expected.numpy(), rtol=0, atol=TOLERANCE)


def forward(detector, images):
    """The heads for ``images`` through the runtime's own pre-processing (OpenVINO's in
    its graph)."""
    inputs, _ = detector.preprocess(images)
    return detector.forward(inputs)


def test_raw_heads_equal_pytorch_fp32_on_the_reference_images(exported, demo_images,
                                                              reference_batch):
    _, reference = reference_batch
    assert exported.precision == "fp32"
    assert_heads_equal(forward(exported, demo_images), reference)


def test_the_batch_dimension_is_free(exported, demo_images, reference_batch):
    _, reference = reference_batch
    assert_heads_equal(forward(exported, demo_images[:1]), [head[:1] for head in reference])
    assert_heads_equal(forward(exported, demo_images[2:5]), [head[2:5] for head in reference])


# --- OpenVINO's letterbox, in its graph -------------------------------------------------------

def letterbox_in_graph(images, width=416, height=416) -> np.ndarray:
    import openvino as ov

    from engine.runtimes.openvino_backend import letterbox_model

    compiled = ov.Core().compile_model(letterbox_model(width, height), "CPU",
                                       {"INFERENCE_PRECISION_HINT": "f32"})
    inputs, _ = letterbox_tables(images, width, height)
    return compiled(inputs)[0]


def test_openvino_letterboxes_in_its_graph_bit_for_bit(demo_images):
    require_runtime("openvino")
    expected, _ = letterbox_batch(demo_images, 416, 416, torch.device("cpu"))
    np.testing.assert_array_equal(letterbox_in_graph(demo_images), expected.numpy())


@pytest.mark.parametrize("shape", [
    (576, 768), (1, 9), (9, 1), (5, 7), (1000, 1000), (300, 2000),
    (25, 100),  # darknet's last row falls short of the last source row (below)
])
def test_the_graph_keeps_darknets_special_cases(shape):
    require_runtime("openvino")
    rng = np.random.default_rng(sum(shape))
    images = [rng.integers(0, 256, (*shape, 3), dtype=np.uint8),
              rng.integers(0, 256, (shape[1], shape[0], 3), dtype=np.uint8)]
    expected, _ = letterbox_batch(images, 320, 256, torch.device("cpu"))
    np.testing.assert_array_equal(letterbox_in_graph(images, 320, 256), expected.numpy())


def test_a_last_row_that_falls_short_is_among_the_cases():
    """25 x 100 above is one of the sizes where darknet's float32 position of the last
    output row (80 rows, into 320 x 256) lands a hair below the last source row: darknet
    takes (1 - dy) of the row above, ~0, and skips the second row. OpenVINO's own
    Interpolate would read the last row there."""
    tables = ResizeTables.build(100, 25, 320, 80)
    assert tables.row_first[-1] == 23 and tables.row_bottom[-1] == 0
    assert 0 < tables.row_top[-1] < 1e-5


# --- passes side by side ------------------------------------------------------------------

def test_openvino_runs_two_passes_at_once_with_the_same_answers(tiny_paths, export_dir,
                                                                demo_images, tiny_openvino):
    require_runtime("openvino")
    streams = Detector.from_files(tiny_paths.cfg, tiny_paths.weights, tiny_paths.names,
                                  device="cpu", precision="fp32", runtime="openvino",
                                  cache_dir=export_dir, streams=2, max_batch=4)
    assert streams.parallel_passes == 2 and tiny_openvino.parallel_passes == 1
    options = [streams.options()] * len(demo_images)
    first = streams.start_each(demo_images[:4], options[:4])
    second = streams.start_each(demo_images[4:], options[4:])  # both under way now
    assert second.result() + first.result() == \
        tiny_openvino.detect(demo_images[4:]) + tiny_openvino.detect(demo_images[:4])
    assert streams.start_each(demo_images, options).result() == tiny_openvino.detect(demo_images)


def test_detections_equal_pytorch_fp32(exported, tiny_fp32, darknet_dir):
    images = [decode_image(darknet_dir / name) for name in IMAGES]
    ours, theirs = exported.detect(images), tiny_fp32.detect(images)
    for mine, reference in zip(ours, theirs, strict=True):
        assert [d.class_id for d in mine] == [d.class_id for d in reference]
        for a, b in zip(mine, reference, strict=True):
            assert a.confidence == pytest.approx(b.confidence, abs=1e-4)
            assert (a.x1, a.y1, a.x2, a.y2) == pytest.approx((b.x1, b.y1, b.x2, b.y2), abs=0.05)


@pytest.mark.parametrize("runtime", EXPORTED)
def test_without_a_cache_the_model_is_exported_in_memory(runtime, tiny_paths, tiny_fp32,
                                                         demo_images, reference_batch):
    require_runtime(runtime)
    network = Detector.from_files(tiny_paths.cfg, tiny_paths.weights, tiny_paths.names,
                                  device="cpu", precision="fp32", runtime="torch").network
    detector = Detector(network, tiny_fp32.names, device="cpu", precision="fp32",
                        runtime=runtime)
    assert detector.backend.path is None
    _, reference = reference_batch
    assert_heads_equal(forward(detector, demo_images[:2]), [head[:2] for head in reference])


# --- the export cache ---------------------------------------------------------------------

def test_a_second_detector_reads_the_exported_model_again(exported, tiny_paths, export_dir):
    path = exported.backend.path
    assert path is not None and path.parent == export_dir
    before = {file: (file.stat().st_ino, file.stat().st_mtime_ns)
              for file in export_dir.iterdir() if file.is_file()}
    again = Detector.from_files(tiny_paths.cfg, tiny_paths.weights, tiny_paths.names,
                                device="cpu", precision="fp32", runtime=exported.runtime,
                                cache_dir=export_dir)
    assert again.backend.path == path
    after = {file: (file.stat().st_ino, file.stat().st_mtime_ns)
             for file in export_dir.iterdir() if file.is_file()}
    assert after == before  # nothing written, nothing replaced
    assert not [p for p in export_dir.iterdir() if p.name.startswith(".writing-")]


def test_the_key_changes_with_weights_input_size_runtime_and_precision(tiny_paths, tmp_path):
    spec = parse_cfg(tiny_paths.cfg)
    other_weights = tmp_path / "yolov3-tiny.weights"
    write_darknet_weights(other_weights, spec, random_darknet_weights(spec, seed=5))
    official = ExportCache(tmp_path / "compiled", tiny_paths.weights)

    def path(cache=official, network=spec, runtime="openvino", precision="fp32"):
        return cache.path(network, runtime=runtime, precision=precision, packages=(),
                          suffix=".xml")

    assert path() == path()
    assert path().name.startswith("yolov3-tiny-openvino-416x416-fp32-")
    others = [path(cache=ExportCache(tmp_path / "compiled", other_weights)),
              path(network=parse_cfg(tiny_paths.cfg, 320)), path(runtime="onnxruntime"),
              path(precision="int8")]
    assert len({path(), *others}) == 5
    assert official.weights_sha256 == model_info("yolov3-tiny").weights_sha256


def test_a_write_goes_into_place_whole_or_not_at_all(tmp_path):
    cache = ExportCache(tmp_path / "compiled", tmp_path / "model.weights")
    target = cache.directory / "model.xml"

    def write_two(staged):  # like OpenVINO's IR: the file and a companion
        staged.with_suffix(".bin").write_bytes(b"weights")
        staged.write_text("graph")

    def fail(staged):
        staged.write_text("half a gra")
        raise RuntimeError("the export failed")

    with pytest.raises(RuntimeError):
        cache.stored(target, fail)
    assert list(cache.directory.iterdir()) == []  # no half-written file, no staging folder
    assert cache.stored(target, write_two) == target
    assert target.read_text() == "graph"
    assert (cache.directory / "model.bin").read_bytes() == b"weights"
    assert cache.stored(target, fail) == target  # there already: not written again


def test_a_folder_that_cannot_be_written_means_an_export_in_memory(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    cache = ExportCache(blocker / "compiled", tmp_path / "model.weights")
    assert cache.stored(cache.directory / "model.onnx", lambda staged: None) is None
    assert cache.folder("openvino") is None


# --- choosing a runtime ---------------------------------------------------------------------

@pytest.fixture
def a_cpu_without_bf16(monkeypatch):
    """An x86-64 CPU where fp32 is the precision (else auto is torch bf16 anyway)."""
    monkeypatch.setattr(detector_module, "cpu_prefers_bf16", lambda: False)
    monkeypatch.setattr(detector_module, "is_x86_64", lambda: True)


def test_auto_is_a_rule(a_cpu_without_bf16, monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_runtime("auto", cuda, "auto") == "torch"
    assert resolve_runtime("auto", cuda, "fp32") == "torch"
    assert resolve_runtime("auto", cpu, "bf16") == "torch"
    if runtimes.is_installed("openvino"):
        assert resolve_runtime("auto", cpu, "auto") == "openvino"
        assert resolve_runtime("auto", cpu, "fp32") == "openvino"
    monkeypatch.setattr(detector_module, "cpu_prefers_bf16", lambda: True)
    assert resolve_runtime("auto", cpu, "auto") == "torch"  # bf16 PyTorch
    monkeypatch.setattr(detector_module, "cpu_prefers_bf16", lambda: False)
    monkeypatch.setattr(detector_module, "is_x86_64", lambda: False)
    assert resolve_runtime("auto", cpu, "fp32") == "torch"  # aarch64, Apple silicon


def test_auto_falls_back_to_torch_where_openvino_is_absent(a_cpu_without_bf16, monkeypatch,
                                                           tiny_paths, tmp_path):
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now fails
    detector = Detector.from_files(tiny_paths.cfg, tiny_paths.weights, tiny_paths.names,
                                   device="cpu", cache_dir=tmp_path)
    assert (detector.runtime, detector.precision) == ("torch", "fp32")
    assert detector.detect([np.zeros((64, 64, 3), np.uint8)]) == [[]]
    assert list(tmp_path.iterdir()) == []  # torch exports nothing


@pytest.mark.parametrize(("runtime", "hidden"), [("openvino", "openvino"),
                                                 ("onnxruntime", "onnxruntime"),
                                                 ("onnxruntime", "onnxscript")])
def test_a_missing_runtime_asked_for_by_name_is_a_clear_error(runtime, hidden, monkeypatch,
                                                              tiny_paths):
    monkeypatch.setitem(sys.modules, hidden, None)
    with pytest.raises(ValueError, match=f"the {runtime} runtime was asked for, but "
                                         f"{hidden} is not installed: pip install {hidden}"):
        Detector.from_files(tiny_paths.cfg, tiny_paths.weights, tiny_paths.names,
                            device="cpu", runtime=runtime)


def test_an_unknown_runtime_is_a_clear_error(tiny_paths):
    with pytest.raises(ValueError, match="unknown runtime 'tensorrt'"):
        Detector.from_files(tiny_paths.cfg, tiny_paths.weights, tiny_paths.names,
                            device="cpu", runtime="tensorrt")


@pytest.mark.parametrize("runtime", EXPORTED)
def test_exported_runtimes_serve_no_bf16(runtime, tiny_paths):
    require_runtime(runtime)
    served = ", ".join(runtimes.PRECISIONS[runtime])  # fp32 (and openvino's int8)
    with pytest.raises(ValueError, match=f"the {runtime} runtime serves {served}, not bf16"):
        Detector.from_files(tiny_paths.cfg, tiny_paths.weights, tiny_paths.names,
                            device="cpu", precision="bf16", runtime=runtime)


def test_openvino_reports_nothing_to_its_usage_telemetry(tmp_path):
    """OpenVINO sends usage telemetry on import unless blocked (engine.runtimes blocks it);
    its consent and client-id files under $HOME are the trace it leaves when it runs."""
    require_runtime("openvino")
    script = ("import engine.detector, openvino; openvino.Core(); "
              "import openvino.tools.ovc.telemetry_utils as t; print(t.tm.__name__)")
    result = subprocess.run([sys.executable, "-c", script], cwd=settings.BASE_DIR,
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "openvino.tools.ovc.telemetry_stub"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("runtime", EXPORTED)
@pytest.mark.parametrize("cfg", ["yolov4-tiny.cfg", "yolov7-tiny.cfg"])
def test_the_forks_networks_run_the_same_through_the_exported_runtimes(runtime, cfg,
                                                                       darknet_dir):
    """mish, swish, grouped routes, scale_x_y, new_coords and the stretched resize
    survive the export."""
    require_runtime(runtime)
    spec = parse_cfg(darknet_dir / "alexeyab" / cfg, 128)
    torch.manual_seed(0)
    network = detector_module.Darknet(spec)
    network.load_weights(random_darknet_weights(spec, seed=5))
    names = [f"class{i}" for i in range(spec.classes)]
    reference = Detector(network, names, device="cpu", precision="fp32", runtime="torch")
    exported = Detector(network, names, device="cpu", precision="fp32", runtime=runtime)
    assert not reference.letter_box and not exported.letter_box  # the fork's: stretched
    images = [decode_image(darknet_dir / name) for name in IMAGES[:3]]
    # Each prepares its own inputs (OpenVINO resizes in its graph).
    assert_heads_equal(exported.forward(exported.preprocess(images)[0]),
                       reference.forward(reference.preprocess(images)[0]))
