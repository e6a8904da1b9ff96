import json

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from engine import MODELS
from engine.evaluate import PROTOCOL, evaluate
from jobs.inference import get_detector


class Command(BaseCommand):
    help = ("COCO mAP@0.5 and mAP@0.5:0.95 (pycocotools) on a folder of labelled images, with "
            "darknet's validation protocol (min_confidence 0.005, NMS 0.45, 100 per image).")

    def add_arguments(self, parser):
        parser.add_argument("--images", required=True, help="folder of images")
        truth = parser.add_mutually_exclusive_group(required=True)
        truth.add_argument("--labels", help="folder of YOLO txt labels (class xc yc w h)")
        truth.add_argument("--coco-json", help="COCO instances JSON with the ground truth")
        parser.add_argument("--model", choices=sorted(MODELS), default=None)
        parser.add_argument("--device", default=None)
        parser.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16", "int8"],
                            default=None)
        parser.add_argument("--batch-size", type=int, default=None)
        parser.add_argument("--json", action="store_true", dest="as_json",
                            help="print the result as JSON")

    def handle(self, *args, images, labels, coco_json, model, device, precision, batch_size,
               as_json: bool, **options):
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

