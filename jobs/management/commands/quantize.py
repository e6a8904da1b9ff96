"""python manage.py quantize: an INT8 model of the weights, calibrated on the user's
images and checked against fp32 (``engine.int8``)."""

import json
from pathlib import Path

from django.conf import settings
from django.core.files.storage import default_storage
from django.core.management.base import BaseCommand, CommandError

from engine import MODELS, ImageError, decode_image
from engine.detector import load_detector
from engine.evaluate import IMAGE_SUFFIXES
from engine.int8 import EvaluationSet, quantize_and_check
from jobs.selectors import recent_image_inputs

# Enough for NNCF's ranges (its default subset is 300; the 64 held accuracy).
DEFAULT_FROM_JOBS = 300


class Command(BaseCommand):
    help = ("Quantize the model to INT8 with NNCF, calibrated on your images (a folder, or "
            "the input files of recent succeeded image jobs), check its mAP@0.5 against "
            "fp32 on a labelled evaluation set, and record the check beside the model. "
            "DETECTOR_PRECISION=int8 serves it; auto does where the check passed.")

    def add_arguments(self, parser):
        parser.add_argument("--model", choices=sorted(MODELS), default=None)
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--images", help="folder of calibration images")
        source.add_argument("--from-jobs", type=int, metavar="N", nargs="?",
                            const=DEFAULT_FROM_JOBS,
                            help="the input files of the N most recent succeeded image jobs "
                                 f"(default {DEFAULT_FROM_JOBS})")
        parser.add_argument("--eval", dest="evaluation", metavar="DIR",
                            help="labelled evaluation set: DIR/images and a COCO *.json or "
                                 "DIR/labels (as ../shared/testdata/coco128_val2017); "
                                 "without it the model is kept unchecked (auto does not "
                                 "serve it)")
        parser.add_argument("--eval-limit", type=int, default=None,
                            help="evaluate on the first N images only")
        parser.add_argument("--json", action="store_true", dest="as_json",
                            help="print the record as JSON")

    def handle(self, *args, model, images, from_jobs, evaluation, eval_limit, as_json,
               **options):
        name = model or settings.DETECTOR_MODEL
        calibration, source = (self._from_folder(Path(images)) if images
                               else self._from_jobs(from_jobs))
        if not calibration:
            raise CommandError(f"no calibration image could be read from {source}")
        try:
            check = (EvaluationSet.from_folder(evaluation, limit=eval_limit)
                     if evaluation else None)
            detector = load_detector(name, settings.WEIGHTS_DIR, device="cpu",
                                     precision="fp32", runtime="openvino", max_batch=8,
                                     input_size=settings.DETECTOR_INPUT_SIZE or None)
            record = quantize_and_check(detector, calibration, calibration_source=source,
                                        evaluation=check, cache=detector.cache,
                                        log=lambda line: self.stderr.write(line))
        except (FileNotFoundError, ValueError, OSError) as exc:
            raise CommandError(str(exc)) from exc
        if as_json:
            self.stdout.write(json.dumps(record, indent=2))
            return
        evaluated = record["evaluation"]
        if evaluated is None:
            verdict = "not checked (no --eval): DETECTOR_PRECISION=int8 serves it, auto does not"
        else:
            verdict = (f"mAP@0.5 fp32 {100 * evaluated['fp32_map50']:.2f}, int8 "
                       f"{100 * evaluated['int8_map50']:.2f} on {evaluated['images']} images: "
                       + ("passed (auto serves INT8)" if record["passed"] else
                          f"failed: more than {record['tolerance_points']} point below fp32"))
        self.stdout.write(f"{record['int8_model']}: calibrated on "
                          f"{record['calibration']['images']} images "
                          f"({record['calibration']['source']}); {verdict}")

    def _from_folder(self, folder: Path) -> tuple[list, str]:
        if not folder.is_dir():
            raise CommandError(f"{folder} is not a folder")
        decoded = []
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                try:
                    decoded.append(decode_image(path))
                except ImageError as exc:
                    self.stderr.write(f"skipping {path.name}: {exc}")
        return decoded, f"images in {folder}"

    def _from_jobs(self, count: int) -> tuple[list, str]:
        if count < 1:
            raise CommandError("--from-jobs takes a count of at least 1")
        decoded = []
        for name in recent_image_inputs(count=count):
            try:
                with default_storage.open(name, "rb") as stream:
                    decoded.append(decode_image(stream.read(),
                                                max_pixels=settings.MAX_IMAGE_PIXELS))
            except (OSError, ImageError) as exc:  # removed since, or unreadable
                self.stderr.write(f"skipping {name}: {exc}")
        return decoded, f"the input files of the {len(decoded)} most recent succeeded image jobs"
