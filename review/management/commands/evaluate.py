import json

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from core.errors import ApiError
from engine.evaluate import PROTOCOL, evaluate
from jobs.inference import get_detector
from review import scoring, services
from review.models import ModelScoring


class Command(BaseCommand):
    help = ("COCO mAP@0.5 and mAP@0.5:0.95 (pycocotools) on a folder of labelled images, with "
            "darknet's validation protocol (min_confidence 0.005, NMS 0.45, 100 per image); "
            "with --reviewed, of each --model on the reviewed data, side by side.")

    def add_arguments(self, parser):
        parser.add_argument("--images", help="folder of images")
        truth = parser.add_mutually_exclusive_group()
        truth.add_argument("--labels", help="folder of YOLO txt labels (class xc yc w h)")
        truth.add_argument("--coco-json", help="COCO instances JSON with the ground truth")
        truth.add_argument("--reviewed", action="store_true",
                           help="the reviewed boxes of the jobs marked reviewed (the COCO "
                                "export's set) are the ground truth")
        parser.add_argument("--model", action="append", default=None,
                            help="NAME or NAME@VERSION (default DETECTOR_MODEL); with "
                                 "--reviewed, give it once per model to compare")
        parser.add_argument("--device", default=None)
        parser.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16", "int8"],
                            default=None)
        parser.add_argument("--batch-size", type=int, default=None)
        parser.add_argument("--json", action="store_true", dest="as_json",
                            help="print the result as JSON")

    def handle(self, *args, images, labels, coco_json, model, device, precision, batch_size,
               as_json: bool, reviewed: bool = False, **options):
        if reviewed:
            self._reviewed(model or [settings.DETECTOR_MODEL], as_json)
            return
        if not images or not (labels or coco_json):
            raise CommandError("give --images with --labels or --coco-json (or --reviewed)")
        if model and len(model) > 1:
            raise CommandError("one --model at a time (several: with --reviewed)")
        model = model[0] if model else None
        try:
            detector = get_detector(model=model, device=device, precision=precision,
                                    max_batch=batch_size)
            result = evaluate(detector, images, labels_dir=labels, coco_json=coco_json,
                              progress=lambda it, total: tqdm(it, total=total, unit="batch",
                                                              desc="evaluating"))
        except (FileNotFoundError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        summary = {"model": detector.network.spec.path, "runtime": detector.runtime,
                   "precision": detector.precision, "device": str(detector.device),
                   "protocol": PROTOCOL, **result.as_dict()}
        if as_json:
            self.stdout.write(json.dumps(summary, indent=2))
            return
        rows = [("images", result.images), ("ground-truth boxes", result.ground_truth_boxes),
                ("detections", result.detections), ("runtime", detector.runtime),
                ("precision", detector.precision),
                ("mAP@0.5", f"{100 * result.map50:.2f}"),
                ("mAP@0.5:0.95", f"{100 * result.map50_95:.2f}")]
        width = max(len(name) for name, _ in rows)
        for name, value in rows:
            self.stdout.write(f"{name:<{width}}  {value}")


    def _reviewed(self, refs: list[str], as_json: bool) -> None:
        """Score the models on the reviewed data here (the models load in this process),
        recorded as a scoring the dashboard lists."""
        try:
            record = services.scoring_start(user=None, refs=refs, send=False)
        except ApiError as exc:
            raise CommandError(exc.message) from None
        bar = tqdm(unit="image", desc="scoring", disable=as_json)

        def shown(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        scoring.run_scoring(str(record.pk), in_worker=False, progress=shown)
        bar.close()
        record = ModelScoring.objects.get(pk=record.pk)
        if record.status != ModelScoring.Status.SUCCEEDED:
            raise CommandError(f"scoring failed: {record.error}")
        if as_json:
            self.stdout.write(json.dumps(record.result, indent=2))
            return
        dataset = record.result["dataset"]
        self.stdout.write(f"reviewed set: {dataset['images']} images ({dataset['video_frames']} "
                          f"video frames) of {dataset['jobs']} jobs, "
                          f"{dataset['ground_truth_boxes']} boxes")
        for line in scoring.table(record.result):
            self.stdout.write(line)
