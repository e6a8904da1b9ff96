import json
from pathlib import Path

import numpy as np
import torch
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from engine import MODELS, ImageError, decode_image, model_info
from engine.benchmark import as_json, run_benchmark, speedups
from engine.detector import cpu_has_native_bf16, resolve_device

SHARED_TESTDATA = settings.BASE_DIR.parent / "shared" / "testdata"


def _int_list(text: str) -> tuple[int, ...]:
    return tuple(int(item) for item in text.split(",") if item.strip())


class Command(BaseCommand):
    help = ("Images/s of this engine at several batch sizes and precisions, and of OpenCV DNN "
            "(readNetFromDarknet) on the same images in the same run. Prints a table and JSON.")

    def add_arguments(self, parser):
        parser.add_argument("--models", default="yolov3-tiny,yolov3",
                            help="comma-separated; official weights when fetched, else random")
        parser.add_argument("--batches", type=_int_list, default=None,
                            help="batch sizes (default 1,8 on CPU; 1,8,32 on CUDA)")
        parser.add_argument("--precisions", default=None,
                            help="default: fp32 and bf16 (where native) on CPU, fp16 on CUDA")
        parser.add_argument("--device", default="auto")
        parser.add_argument("--rounds", type=int, default=5)
        parser.add_argument("--images", default=None, help="folder of images (default: the "
                            "shared COCO evaluation images, else the darknet demo images)")
        parser.add_argument("--input-size", type=int, default=None)
        parser.add_argument("--no-opencv", action="store_true")
        parser.add_argument("--json-out", default=None, help="also write the JSON here")

    def handle(self, *args, models, batches, precisions, device, rounds, images, input_size,
               no_opencv, json_out, **options):
        target = resolve_device(device)
        batches = batches or ((1, 8, 32) if target.type == "cuda" else (1, 8))
        if precisions:
            chosen = tuple(p.strip() for p in precisions.split(","))
        elif target.type == "cuda":
            chosen = ("fp16",)
        else:
            chosen = ("fp32", "bf16") if cpu_has_native_bf16() else ("fp32",)
        pictures = self._images(images, count=2 * max(batches))
        results = []
        for name in (m.strip() for m in models.split(",")):
            if name not in MODELS:
                raise CommandError(f"unknown model {name!r} (known: {', '.join(MODELS)})")
            cfg, weights, names = self._model_files(name)
            results += run_benchmark(
                model=name, cfg=cfg, weights=weights, names=names, images=pictures,
                batches=batches, precisions=chosen, device=str(target), rounds=rounds,
                opencv=not no_opencv, input_size=input_size,
                log=lambda line: self.stderr.write(line))
        report = as_json(results)
        report["images"] = len(pictures)
        report["cpu_threads"] = torch.get_num_threads()
        self._table(results)
        self.stdout.write(json.dumps(report, indent=2))
        if json_out:
            Path(json_out).parent.mkdir(parents=True, exist_ok=True)
            Path(json_out).write_text(json.dumps(report, indent=2))

    def _model_files(self, name: str) -> tuple[Path, Path | None, Path | None]:
        paths = model_info(name).paths(settings.WEIGHTS_DIR)
        if not paths.missing():
            return paths.cfg, paths.weights, paths.names
        cfg = paths.cfg if paths.cfg.is_file() else SHARED_TESTDATA / "darknet" / f"{name}.cfg"
        if not cfg.is_file():
            raise CommandError(f"no cfg for {name}: run fetch_weights --model {name}")
        self.stderr.write(f"{name}: official weights not fetched; timing random weights")
        return cfg, None, None

    def _images(self, folder: str | None, count: int) -> list[np.ndarray]:
        candidates = [Path(folder)] if folder else [SHARED_TESTDATA / "coco128_val2017" / "images",
                                                    SHARED_TESTDATA / "darknet"]
        for directory in candidates:
            if not directory.is_dir():
                continue
            decoded = []
            for path in sorted(directory.iterdir()):
                try:
                    decoded.append(decode_image(path))
                except ImageError:
                    continue
                if len(decoded) == count:
                    break
            if decoded:
                return [decoded[i % len(decoded)] for i in range(count)]
        self.stderr.write("no image folder found: timing random 640x480 images")
        rng = np.random.default_rng(0)
        return [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(count)]

    def _table(self, results) -> None:
        ratios = {(r["model"], r["precision"], r["batch"]): r for r in speedups(results)}
        header = (f"{'model':<12} {'runtime':<10} {'device':<7} {'prec':<5} {'batch':>5} "
                  f"{'ms/img':>8} {'img/s':>7} {'x cv same':>9} {'x cv best':>9}")
        self.stdout.write(header)
        self.stdout.write("-" * len(header))
        for r in results:
            ratio = ratios.get((r.model, r.precision, r.batch)) if r.runtime == "pmr" else None
            same = ratio and ratio["vs_opencv_same_batch"]
            best = ratio and ratio["vs_opencv_best"]
            self.stdout.write(
                f"{r.model:<12} {r.runtime:<10} {r.device:<7} {r.precision:<5} {r.batch:>5} "
                f"{r.ms_per_image:>8.1f} {r.images_per_second:>7.1f} "
                f"{f'{same:.2f}' if same else '':>9} {f'{best:.2f}' if best else '':>9}")
