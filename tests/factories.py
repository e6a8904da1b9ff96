"""factory_boy factories for the models."""

from __future__ import annotations

from pathlib import Path

import factory
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from jobs.models import Detection, Job, Video, Webhook
from review.models import ReviewMark

VIDEO_FIELDS = ("fps", "frame_count", "duration_ms", "codec", "frames_total", "frames_done",
                "processing_ms", "annotated_file", "annotation_requested_at")


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")


class JobFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Job

    kind = Job.Kind.IMAGE
    owner = factory.SubFactory(UserFactory)
    status = Job.Status.SUCCEEDED
    params = factory.LazyFunction(lambda: {"min_confidence": 0.25, "iou_threshold": 0.45,
                                           "classes": None, "max_detections": 100})
    model_name = "yolov3-tiny"
    original_filename = factory.Sequence(lambda n: f"photo{n}.jpg")
    content_type = "image/jpeg"
    width = 640
    height = 480

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        """Fields of a job's one-to-one rows may be given as the job's: ``fps=``,
        ``callback_url=``, ``reviewed_at=``... (a video job always gets its Video row)."""
        video = {name: kwargs.pop(name) for name in VIDEO_FIELDS if name in kwargs}
        webhook = {name: kwargs.pop(key) for key, name in (
            ("callback_url", "url"), ("base_url", "base_url"), ("webhook_log", "log"))
            if key in kwargs}
        mark = {name: kwargs.pop(name) for name in ("reviewed_at", "reviewed_by")
                if name in kwargs}
        job = super()._create(model_class, *args, **kwargs)
        if job.kind == Job.Kind.VIDEO or video:
            Video.objects.create(job=job, **video)
        if webhook.get("url"):
            Webhook.objects.create(job=job, **webhook)
        if mark.get("reviewed_at"):
            ReviewMark.objects.create(job=job, **mark)
        return job


class DetectionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Detection

    job = factory.SubFactory(JobFactory)
    class_id = 16
    label = "dog"
    confidence = 0.8
    x1, y1, x2, y2 = 10.0, 20.0, 110.0, 220.0


def image_job_with_detections(image: Path, model_paths, folder: str) -> Job:
    """An image job on a real image, stored under ``folder``, with the detector's own
    detections (yolov3-tiny, fp32)."""
    from engine import decode_image
    from engine.detector import Detector

    pixels = decode_image(image)
    name = default_storage.save(f"uploads/images/{folder}/{image.name}",
                                ContentFile(image.read_bytes()))
    job = JobFactory(input_file=name, width=pixels.shape[1], height=pixels.shape[0],
                     original_filename=image.name)
    detector = Detector.from_files(model_paths.cfg, model_paths.weights, model_paths.names,
                                   device="cpu", precision="fp32")
    for d in detector.detect([pixels])[0]:
        DetectionFactory(job=job, class_id=d.class_id, label=d.label, confidence=d.confidence,
                         x1=d.x1, y1=d.y1, x2=d.x2, y2=d.y2)
    return job
