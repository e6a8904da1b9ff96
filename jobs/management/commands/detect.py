import json
from pathlib import Path

import cv2
from django.core.management.base import BaseCommand, CommandError

from engine import MODELS, ImageError, decode_image
from engine.annotate import draw_detections
from jobs.inference import get_detector


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


class Command(BaseCommand):
    help = ("Detect objects in image files; prints one JSON object per image per line, "
            "boxes in original-image pixels.")

    def add_arguments(self, parser):
        parser.add_argument("images", nargs="+", metavar="IMAGE")
        parser.add_argument("--min-confidence", type=float, default=0.25)
        parser.add_argument("--iou", type=float, default=0.45, help="NMS IoU threshold")
        parser.add_argument("--classes", default=None,
                            help="comma-separated class names (or ids) to keep, e.g. person,car")
        parser.add_argument("--max-detections", type=_positive_int, default=100)
        parser.add_argument("--batch-size", type=_positive_int, default=None,
                            help="images per forward pass (default: DETECTOR_MAX_BATCH)")
        parser.add_argument("--model", choices=sorted(MODELS), default=None)
        parser.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N")
        parser.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16", "int8"],
                            default=None)
        parser.add_argument("--annotate", metavar="OUTDIR", default=None,
                            help="also write each image with its boxes drawn into OUTDIR")

    def handle(self, *args, images, min_confidence, iou, classes, max_detections, batch_size,
               model, device, precision, annotate, **options):
        try:
            detector = get_detector(model=model, device=device, precision=precision,
                                    max_batch=batch_size)
            wanted = detector.class_ids(classes.split(",")) if classes else None
        except (FileNotFoundError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        outdir = Path(annotate) if annotate else None
        if outdir:
            outdir.mkdir(parents=True, exist_ok=True)

        failures = 0
        for start in range(0, len(images), detector.max_batch):
            names = images[start:start + detector.max_batch]
            decoded: dict[int, object] = {}
            errors: dict[int, ImageError] = {}
            for index, name in enumerate(names):
                try:
                    decoded[index] = decode_image(name)
                except ImageError as exc:
                    errors[index] = exc
            try:
                found = dict(zip(decoded, detector.detect(
                    list(decoded.values()), min_confidence=min_confidence, iou_threshold=iou,
                    classes=wanted, max_detections=max_detections), strict=True))
            except ValueError as exc:
                raise CommandError(str(exc)) from exc
            for index, name in enumerate(names):  # in the order given
                if index in errors:
                    failures += 1
                    self._emit({"file": name, "error": {"code": errors[index].code,
                                                        "message": str(errors[index])}})
                    continue
                image, detections = decoded[index], found[index]
                self._emit({"file": name, "width": image.shape[1], "height": image.shape[0],
                            "detections": [d.as_dict() for d in detections]})
                if outdir:
                    drawn = draw_detections(image, detections)
                    target = outdir / f"{Path(name).stem}.jpg"
                    cv2.imwrite(str(target), cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
        if failures:
            raise CommandError(f"{failures} of {len(images)} files could not be read",
                               returncode=2)

    def _emit(self, record: dict) -> None:
        self.stdout.write(json.dumps(record))
