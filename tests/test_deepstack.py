"""The DeepStack-compatible endpoint in-process: its defaults and its ways of taking a key.
(deepstack-python against a running stack is in tests/integration/test_compat.py.)"""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.authtoken.models import Token

from jobs.models import Job

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_default_threshold_is_04_and_a_token_header_works(client, user, eager_celery,
                                                              tiny_paths, darknet_dir):
    key = Token.objects.create(user=user).key
    horses = (darknet_dir / "horses.jpg").read_bytes()  # two of its detections are under 0.4
    response = client.post("/v1/vision/detection", {"image": SimpleUploadedFile("h.jpg", horses)},
                           headers={"Authorization": f"Token {key}"})
    assert response.status_code == 200, response.content
    answer = response.json()
    job = Job.objects.get(owner=user)
    assert job.params["min_confidence"] == 0.4
    native = client.post("/api/detect/image", {"image": SimpleUploadedFile("h.jpg", horses)},
                         headers={"Authorization": f"Token {key}"}).json()
    above = [d for d in native["detections"] if d["confidence"] > 0.4]
    assert len(above) < len(native["detections"])  # the default 0.25 keeps more: it matters
    assert [(p["label"], p["confidence"]) for p in answer["predictions"]] == [
        (d["label"], pytest.approx(d["confidence"], abs=1e-6)) for d in above]
    assert answer["success"] is True


def test_a_wrong_token_header_is_a_401_in_deepstacks_shape(client, darknet_dir):
    dog = (darknet_dir / "dog.jpg").read_bytes()
    response = client.post("/v1/vision/detection", {"image": SimpleUploadedFile("d.jpg", dog)},
                           headers={"Authorization": "Token not-a-token"})
    assert response.status_code == 401
    assert response.json()["success"] is False
