"""INT8 with accuracy held: NNCF quantization calibrated on the shared videos' frames and
darknet's demo images (never on the evaluation set), mAP@0.5 on coco128 within one
point of fp32, the record beside the model, and the rule by which ``auto`` serves it."""

from __future__ import annotations

import io
import json

import cv2
import numpy as np
import pytest
from django.core.management import call_command

from engine import runtimes
from engine.detector import Detector
from engine.image import decode_image
from engine.int8 import EvaluationSet, quantize_and_check
from engine.runtimes.openvino_backend import NotQuantized
from tests.conftest import missing, require_runtime


def require_nncf() -> None:
    require_runtime("openvino")
    try:
        import nncf  # noqa: F401
    except ImportError:
        missing("nncf is not installed (requirements.txt pins it on x86-64)")

FRAMES_PER_VIDEO = 12  # 5 videos: 60 frames, and the 7 demo images


def video_frames(path, count: int) -> list[np.ndarray]:
    """``count`` frames spread evenly over the video, RGB."""
    capture = cv2.VideoCapture(str(path))
    try:
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        frames = []
        for index in np.linspace(0, total - 1, count).astype(int):
            capture.set(cv2.CAP_PROP_POS_FRAMES, int(index))
            ok, bgr = capture.read()
            if ok:
                frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        return frames
    finally:
        capture.release()


@pytest.fixture(scope="module")
def calibration(videos_dir, darknet_dir) -> list[np.ndarray]:
    frames = [frame for video in sorted(videos_dir.glob("*.mp4"))
              for frame in video_frames(video, FRAMES_PER_VIDEO)]
    return frames + [decode_image(path) for path in sorted(darknet_dir.glob("*.jpg"))]


@pytest.fixture(scope="module")
def int8_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("int8-compiled")


@pytest.fixture(scope="module")
def record(tiny_paths, int8_cache, calibration, coco128_dir) -> dict:
    require_nncf()
    fp32 = Detector.from_files(tiny_paths.cfg, tiny_paths.weights, tiny_paths.names,
                               device="cpu", precision="fp32", runtime="openvino",
                               max_batch=8, cache_dir=int8_cache)
    # The whole coco128 set: about 40 s for both evaluations on two cores.
    return quantize_and_check(fp32, calibration, calibration_source="shared videos + demo",
                              evaluation=EvaluationSet.from_folder(coco128_dir),
                              cache=fp32.cache, log=lambda line: None)


@pytest.mark.slow
def test_int8_map_is_within_one_point_of_fp32_on_coco128(record, calibration):
    evaluation = record["evaluation"]
    assert evaluation["images"] == 128
    assert abs(evaluation["int8_map50"] - evaluation["fp32_map50"]) <= 0.01
    assert abs(evaluation["fp32_map50"] - 0.293) <= 0.005  # fp32 OpenVINO: darknet's score
    assert record["passed"] is True
    assert record["calibration"] == {"source": "shared videos + demo",
                                     "images": len(calibration)}
    assert record["weights_sha256"] == ("dccea06f59b781ec1234ddf8d1e94b9519a97f4245748a7d4db75"
                                        "d5b7080a42c")


@pytest.mark.slow
def test_the_record_lies_beside_the_int8_model(record, int8_cache, tiny_paths):
    (model,) = int8_cache.glob("*-int8-*.xml")
    assert model.name == record["int8_model"] and model.with_suffix(".bin").is_file()
    assert json.loads(model.with_suffix(".json").read_text()) == record


@pytest.mark.slow
def test_auto_serves_int8_only_where_the_check_passed(record, int8_cache, tiny_paths,
                                                      monkeypatch, darknet_dir):
    from engine import detector as detector_module

    monkeypatch.setattr(detector_module, "is_x86_64", lambda: True)

    def detector(**options):
        return Detector.from_files(tiny_paths.cfg, tiny_paths.weights, tiny_paths.names,
                                   device="cpu", cache_dir=int8_cache, **options)

    served = detector()  # auto, auto: the check passed, whatever bf16 the CPU has
    assert (served.runtime, served.precision) == ("openvino", "int8")
    found = served.detect([decode_image(darknet_dir / "dog.jpg")])[0]
    assert {"dog", "bicycle"} <= {d.label for d in found}
    assert detector(precision="fp32").precision == "fp32"  # asked for: served
    assert detector(runtime="torch").runtime == "torch"

    record_file = int8_cache / record["int8_model"].replace(".xml", ".json")
    failed = {**record, "passed": False}
    monkeypatch.setattr(runtimes, "int8_record", lambda cache, spec: failed)
    assert detector(runtime="openvino").precision == "fp32"  # a failed check: not by auto
    assert detector(precision="int8").precision == "int8"  # asked for by name: served
    assert record_file.is_file()


def test_int8_without_a_quantized_model_is_a_clear_error(tiny_paths, tmp_path):
    require_runtime("openvino")
    with pytest.raises(NotQuantized, match=r"run 'python manage.py quantize' first"):
        Detector.from_files(tiny_paths.cfg, tiny_paths.weights, tiny_paths.names,
                            device="cpu", precision="int8", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="the torch runtime serves fp32, bf16, fp16, not int8"):
        Detector.from_files(tiny_paths.cfg, tiny_paths.weights, tiny_paths.names,
                            device="cpu", precision="int8", runtime="torch", cache_dir=tmp_path)


@pytest.mark.django_db
def test_the_command_calibrates_on_the_latest_succeeded_image_jobs(tiny_paths, darknet_dir,
                                                                   settings, tmp_path):
    """--from-jobs reads the stored input files through Django's storage; without --eval
    the model is kept, unchecked, and auto would not serve it."""
    require_nncf()
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    from jobs.models import Job
    from tests.factories import JobFactory

    weights = tmp_path / "weights"
    weights.mkdir()
    for path in (tiny_paths.cfg, tiny_paths.weights, tiny_paths.names):
        (weights / path.name).symlink_to(path)
    settings.WEIGHTS_DIR = weights
    for name in ("dog", "horses", "eagle"):
        stored = default_storage.save(f"inputs/{name}.jpg",
                                      ContentFile((darknet_dir / f"{name}.jpg").read_bytes()))
        JobFactory(input_file=stored)
    JobFactory(input_file="inputs/gone.jpg")  # removed by retention since: skipped
    JobFactory(input_file="", status=Job.Status.FAILED)
    out, err = io.StringIO(), io.StringIO()
    call_command("quantize", "--from-jobs", "3", "--json", stdout=out, stderr=err)
    record = json.loads(out.getvalue())
    assert record["calibration"]["images"] == 2  # the newest 3: gone.jpg, eagle, horses
    assert "most recent succeeded image jobs" in record["calibration"]["source"]
    assert record["evaluation"] is None and record["passed"] is False
    assert "skipping inputs/gone.jpg" in err.getvalue()
    assert list((weights / "compiled").glob("*-int8-*.xml"))
