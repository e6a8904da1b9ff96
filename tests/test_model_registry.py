"""The model registry: uploads checked before they are accepted, versions, the default,
per-request choice (native API, DeepStack's custom route, Rekognition's Custom Labels),
and a worker holding several models — with a genuine custom model, cut from the official
yolov3-tiny (tests/custom_model.py)."""

from __future__ import annotations

import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command

from jobs.models import DetectorModel, Job
from tests.conftest import files_under
from tests.custom_model import KEPT, write_three_class_model
from tests.factories import JobFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def staff_api(db):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(UserFactory(username="model-admin", is_staff=True))
    return client


@pytest.fixture(scope="session")
def tiny3(tiny_paths, tmp_path_factory) -> dict:
    return write_three_class_model(tiny_paths, tmp_path_factory.mktemp("tiny3"))


@pytest.fixture(scope="module")
def images(darknet_dir):
    from engine import decode_image

    return {"dog": decode_image((darknet_dir / "dog.jpg").read_bytes())}


@pytest.fixture(autouse=True)
def _torch_runtime(settings):
    # No export per model and test (quick to load), and fp32: the reference's precision.
    settings.DETECTOR_RUNTIME = "torch"
    settings.DETECTOR_PRECISION = "fp32"


def upload(client, files: dict, name: str = "tiny3", **fields):
    data = {kind: SimpleUploadedFile(f"{name}.{kind}", files[kind].read_bytes()
                                     if hasattr(files[kind], "read_bytes") else files[kind])
            for kind in ("cfg", "weights", "names")}
    return client.post("/api/models", {"name": name, **data, **fields}, format="multipart")


def stored_model_files(settings) -> list:
    folder = settings.MEDIA_ROOT / "models"
    return files_under(folder) if folder.exists() else []


def detect(client, image: bytes, **params) -> dict:
    response = client.post("/api/detect/image", {"image": SimpleUploadedFile("i.jpg", image),
                                                 **params}, format="multipart")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "succeeded", body
    return body


def same_boxes(custom: list[dict], reference) -> None:
    """The custom model's boxes are the 80-class model's boxes of its classes."""
    wanted = sorted((d for d in reference if d.label in KEPT),
                    key=lambda d: (d.label, -d.confidence))
    got = sorted(custom, key=lambda d: (d["label"], -d["confidence"]))
    assert [d["label"] for d in got] == [d.label for d in wanted]
    for mine, theirs in zip(got, wanted, strict=True):
        assert mine["confidence"] == pytest.approx(theirs.confidence, abs=1e-4)
        for side in ("x1", "y1", "x2", "y2"):
            assert mine["box"][side] == pytest.approx(getattr(theirs, side), abs=0.02)


def test_an_uploaded_three_class_model_gives_the_80_class_models_boxes_of_its_classes(
        staff_api, eager_celery, tiny3, tiny_fp32, darknet_dir, settings):
    from engine import decode_image

    response = upload(staff_api, tiny3, notes="person, car and dog from yolov3-tiny")
    assert response.status_code == 201, response.content
    model = response.json()
    assert (model["name"], model["version"], model["default"], model["created"]) == \
        ("tiny3", 1, True, True)
    assert model["class_names"] == list(KEPT) and model["classes"] == 3
    assert model["input_size"] == {"width": 416, "height": 416}
    assert model["resize"] == "letterbox" and model["created_by"] == "model-admin"
    assert len(stored_model_files(settings)) == 3
    for image in ("dog.jpg", "person.jpg"):
        data = (darknet_dir / image).read_bytes()
        # The 80-class model in PyTorch fp32, as the custom one runs here.
        reference = tiny_fp32.detect([decode_image(data)], max_detections=1000)[0]
        custom = detect(staff_api, data, model="tiny3")
        assert custom["model"]["name"] == "tiny3" and custom["model"]["version"] == 1
        assert custom["model"]["sha256"] == model["sha256"]["weights"]
        assert (custom["model"]["runtime"], custom["model"]["precision"]) == ("torch", "fp32")
        assert custom["detections"], image
        same_boxes(custom["detections"], reference)
        assert detect(staff_api, data)["model"]["name"] == "yolov3-tiny"  # no model: default
        pinned = detect(staff_api, data, model="tiny3@1", classes="dog")
        assert {d["label"] for d in pinned["detections"]} <= {"dog"}
        job = Job.objects.get(pk=pinned["id"])
        assert (job.model_name, job.model_version) == ("tiny3", 1)


def test_deepstack_custom_route_answers_with_the_named_model(
        staff_api, client, eager_celery, tiny3, darknet_dir, settings):
    settings.ALLOW_ANONYMOUS = True
    assert upload(staff_api, tiny3).status_code == 201
    data = (darknet_dir / "dog.jpg").read_bytes()
    native = detect(staff_api, data, model="tiny3", min_confidence=0.4)
    response = client.post("/v1/vision/custom/tiny3", {"image": SimpleUploadedFile("d.jpg", data),
                                                       "min_confidence": "0.4"})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["success"] is True
    assert sorted((p["label"], p["x_min"], p["y_max"]) for p in body["predictions"]) == sorted(
        (d["label"], round(d["box"]["x1"]), round(d["box"]["y2"])) for d in native["detections"])
    missing = client.post("/v1/vision/custom/nosuch", {"image": SimpleUploadedFile("d.jpg", data)})
    assert missing.status_code == 400
    assert missing.json()["success"] is False and "tiny3" in missing.json()["error"]


def test_a_request_for_an_unknown_model_is_a_400_listing_the_known_ones(api, darknet_dir):
    response = api.post("/api/detect/image", {
        "image": SimpleUploadedFile("d.jpg", (darknet_dir / "dog.jpg").read_bytes()),
        "model": "nosuch"}, format="multipart")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_parameters"
    assert "unknown model 'nosuch'" in str(error["details"]) and "yolov3-tiny" in str(
        error["details"])
    bad_version = api.post("/api/detect/image", {
        "image": SimpleUploadedFile("d.jpg", (darknet_dir / "dog.jpg").read_bytes()),
        "model": "yolov3-tiny@7"}, format="multipart")
    assert bad_version.status_code == 400
    assert not Job.objects.exists()


def test_classes_are_checked_against_the_chosen_model(staff_api, tiny3, darknet_dir):
    assert upload(staff_api, tiny3).status_code == 201
    response = staff_api.post("/api/detect/image", {
        "image": SimpleUploadedFile("d.jpg", (darknet_dir / "dog.jpg").read_bytes()),
        "model": "tiny3", "classes": "dog,bicycle"}, format="multipart")
    assert response.status_code == 400
    assert "unknown classes for model tiny3@1: bicycle" in str(response.json()["error"])


# --- Bad uploads: a clear 4xx, nothing stored -------------------------------------------

def _bad(staff_api, settings, files, *, status=400, code=None, says=()):
    before = DetectorModel.objects.count()
    response = upload(staff_api, files)
    assert response.status_code == status, response.content
    error = response.json()["error"]
    if code:
        assert error["code"] == code, error
    for words in says:
        assert words in error["message"], error
    assert DetectorModel.objects.count() == before
    assert stored_model_files(settings) == []
    return error


def test_bad_uploads_are_each_a_clear_4xx_and_leave_nothing(staff_api, tiny3, tiny_paths,
                                                            settings):
    good = {kind: tiny3[kind].read_bytes() for kind in ("cfg", "weights", "names")}
    _bad(staff_api, settings, {**good, "weights": good["weights"][:-1000]},
         code="weights_mismatch", says=("1000 bytes too short",))
    _bad(staff_api, settings, {**good, "weights": good["weights"] + b"\0" * 12},
         code="weights_mismatch", says=("12 bytes left over",))
    cfg = good["cfg"].decode()
    unknown_section = cfg.replace("[upsample]", "[upsampler]")
    line = cfg[:cfg.index("[upsample]")].count("\n") + 1
    error = _bad(staff_api, settings, {**good, "cfg": unknown_section.encode()},
                 code="invalid_cfg", says=(f":{line}:", "upsampler"))
    assert "section" in error["message"]
    eighty = tiny_paths.names.read_text().splitlines()
    assert len(eighty) == 80
    _bad(staff_api, settings, {"cfg": tiny_paths.cfg.read_bytes(),
                               "weights": tiny_paths.weights.read_bytes()[:20],
                               "names": "\n".join(eighty[:79]).encode()},
         code="weights_mismatch")  # the weights are checked first: cut to the header
    _bad(staff_api, settings, {**good, "names": b"person\ncar\n"}, code="names_mismatch",
         says=("2 names", "3 classes"))
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
    _bad(staff_api, settings, {**good, "weights": png}, code="weights_mismatch")
    _bad(staff_api, settings, {**good, "cfg": png}, code="invalid_cfg", says=("binary",))
    _bad(staff_api, settings, {**good, "names": png}, code="invalid_names")


def test_eighty_class_names_file_with_79_lines_is_refused(staff_api, tiny_paths, settings):
    eighty = tiny_paths.names.read_text().splitlines()
    error = _bad(staff_api, settings, {"cfg": tiny_paths.cfg.read_bytes(),
                                       "weights": tiny_paths.weights.read_bytes(),
                                       "names": "\n".join(eighty[:79]).encode()},
                 code="names_mismatch")
    assert "79 names" in error["message"] and "80 classes" in error["message"]


def test_an_upload_over_the_limit_is_refused_from_its_length(staff_api, tiny3, settings):
    # A 2 GB body is refused from its Content-Length, before anything of it is read (and,
    # being over every limit, not drained either: the test client has no such body).
    settings.UPLOAD_LIMITS = {**settings.UPLOAD_LIMITS, "/api/detect/video": 10**9}
    response = staff_api.generic("POST", "/api/models", b"", content_type="multipart/form-data; "
                                 "boundary=x", CONTENT_LENGTH=str(2 * 1024**3))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"
    assert "upload limit is 1073741824" in response.json()["error"]["message"]
    # And the files themselves, whatever the length said.
    settings.MAX_MODEL_UPLOAD_BYTES = 1_000_000
    error = _bad(staff_api, settings, tiny3, status=413, code="too_large")
    assert error["details"] == {"max_bytes": 1_000_000}


def test_only_staff_may_upload(api, tiny3, settings):
    response = upload(api, tiny3)
    assert response.status_code == 403
    assert stored_model_files(settings) == []
    assert api.get("/api/models").status_code == 200  # anyone with a token may read


# --- Versions, default, delete ----------------------------------------------------------

def test_versions_default_and_delete(staff_api, tiny3, tiny_paths, tmp_path, settings):
    first = upload(staff_api, tiny3).json()
    again = upload(staff_api, tiny3)
    assert again.status_code == 200 and again.json()["version"] == 1
    assert again.json()["created"] is False
    other = write_three_class_model(tiny_paths, tmp_path, suffix="-b")
    weights = bytearray(other["weights"].read_bytes())
    weights[-4:] = b"\0\0\0\0"  # a retrained model: other numbers, same layout
    second = upload(staff_api, {**other, "weights": bytes(weights)}).json()
    assert second["version"] == 2 and second["default"] is True
    assert second["sha256"]["weights"] != first["sha256"]["weights"]
    assert len(stored_model_files(settings)) == 6

    listed = staff_api.get("/api/models").json()["models"]
    by_name = {m["name"]: m for m in listed}
    assert by_name["tiny3"]["default_version"] == 2
    assert [v["version"] for v in by_name["tiny3"]["versions"]] == [2, 1]
    assert by_name["yolov3-tiny"]["versions"][0]["builtin"] is True

    assert staff_api.patch("/api/models/tiny3", {"default_version": 1},
                           format="json").json()["default_version"] == 1
    assert staff_api.get("/api/models/tiny3@2").json()["default"] is False
    assert staff_api.patch("/api/models/tiny3", {"default_version": 9},
                           format="json").status_code == 400

    queued = JobFactory(model_name="tiny3", model_version=2, status=Job.Status.QUEUED)
    busy = staff_api.delete("/api/models/tiny3@2")
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "model_in_use"
    queued.status = Job.Status.SUCCEEDED
    queued.save()
    assert staff_api.delete("/api/models/tiny3@2").status_code == 204
    assert staff_api.get("/api/models/tiny3@2").status_code == 404
    assert len(stored_model_files(settings)) == 3
    assert staff_api.delete("/api/models/yolov3-tiny").status_code == 409  # built in
    assert staff_api.delete("/api/models/tiny3").status_code == 204
    assert stored_model_files(settings) == []
    assert staff_api.get("/api/models/tiny3").status_code == 404


def test_add_model_command_registers_as_the_api_does(tiny3, settings):
    out = io.StringIO()
    call_command("add_model", "tiny3", "--cfg", str(tiny3["cfg"]), "--weights",
                 str(tiny3["weights"]), "--names", str(tiny3["names"]), stdout=out)
    assert "tiny3@1: added (the default version); 3 classes" in out.getvalue()
    call_command("add_model", "tiny3", "--cfg", str(tiny3["cfg"]), "--weights",
                 str(tiny3["weights"]), "--names", str(tiny3["names"]), stdout=out)
    assert "tiny3@1: already registered" in out.getvalue()
    assert DetectorModel.objects.get(name="tiny3").class_names == list(KEPT)


def test_fetch_weights_registers_the_builtin_model(tiny_paths):
    out = io.StringIO()
    call_command("fetch_weights", "--model", "yolov3-tiny", "--quiet", stdout=out)
    assert "registered as model yolov3-tiny@1" in out.getvalue()
    model = DetectorModel.objects.get(name="yolov3-tiny")
    assert model.builtin and model.is_default and model.classes == 80
    assert model.weights_sha256 == ("dccea06f59b781ec1234ddf8d1e94b9519a97f4245748a7d4db75d5b"
                                    "7080a42c")


def test_a_request_looks_the_builtin_files_up_again_only_when_they_change(
        tiny_paths, tmp_path, settings, django_assert_num_queries):
    import os
    import shutil

    from jobs import catalog

    for path in (tiny_paths.cfg, tiny_paths.weights, tiny_paths.names):
        shutil.copy(path, tmp_path / path.name)
    settings.WEIGHTS_DIR = tmp_path
    first = catalog.resolve(None)  # registers the files
    with django_assert_num_queries(1):  # the default version; the files are as registered
        assert catalog.resolve(None) == first
    weights = tmp_path / tiny_paths.weights.name
    stamp = weights.stat().st_mtime_ns
    os.utime(weights, ns=(stamp + 10**9, stamp + 10**9))  # touched: looked up again
    with django_assert_num_queries(2):
        assert catalog.resolve(None) == first  # the same files: the same version
    DetectorModel.objects.filter(name="yolov3-tiny").delete()  # gone meanwhile
    assert catalog.resolve(None) == first  # registered again
    assert DetectorModel.objects.filter(name="yolov3-tiny").count() == 1


# --- A worker holding several models ----------------------------------------------------

def test_a_worker_keeps_up_to_max_loaded_models_and_lets_the_oldest_idle_one_go(
        staff_api, tiny3, tiny_paths, tmp_path, settings, images):
    from jobs import inference, runtime

    settings.MAX_LOADED_MODELS = 2
    assert upload(staff_api, tiny3).status_code == 201
    other = write_three_class_model(tiny_paths, tmp_path, suffix="-b")
    assert upload(staff_api, other, name="tiny3b").status_code == 201
    before = dict(runtime.current().batchers)
    try:
        with inference.batcher_for("tiny3") as first:
            assert first.detector(60).names == list(KEPT)
            with inference.batcher_for("tiny3b") as second:  # both held: over, not evicted
                second.detector(60)
                inference.get_batcher()  # the default model: a third
                assert "tiny3@1" in runtime.current().models_loaded()
        loaded = runtime.current().models_loaded()
        assert {"tiny3@1", "tiny3b@1", "yolov3-tiny"} <= set(loaded)
        # The next use past the limit lets the oldest idle one go (not the default).
        inference.get_batcher("tiny3b")
        assert "tiny3@1" not in runtime.current().models_loaded()
        assert first.failed is False and len(runtime.current().batchers) <= 3
        result = inference.get_batcher("tiny3").submit(
            images["dog"], first.detector().options()).result(60)  # loaded again
        assert {d.label for d in result.detections} <= set(KEPT)
    finally:
        for key in set(runtime.current().batchers) - set(before):
            runtime.current().batchers.pop(key).close()
