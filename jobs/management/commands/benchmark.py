import json
from pathlib import Path

import torch
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from engine import MODELS, model_info
from engine.benchmark import as_json, gemm_gflops, run_benchmark, spec_gflops
from engine.cfg import parse_cfg
from engine.detector import resolve_device
from engine.evaluate import IMAGE_SUFFIXES
from engine.runtimes import RUNTIMES

SHARED_TESTDATA = settings.BASE_DIR.parent / "shared" / "testdata"


def _int_list(text: str) -> tuple[int, ...]:
    return tuple(int(item) for item in text.split(",") if item.strip())


def _names(text: str | None) -> tuple[str, ...] | None:
    return tuple(item.strip() for item in text.split(",") if item.strip()) if text else None


class Command(BaseCommand):
    help = ("Images/s of every runtime of this engine (whole pipeline from JPEG files, and "
            "forward only) and, side by side in the same run on the same files, of OpenCV "
            "DNN, ONNX Runtime and OpenVINO called the plain way; each one's share of the "
            "CPU's fp32 matmul rate, and where PMR's time goes stage by stage. A table and JSON.")

    def add_arguments(self, parser):
        parser.add_argument("--models", default="yolov3-tiny,yolov3",
                            help="comma-separated; official weights when fetched, else random")
        parser.add_argument("--batches", type=_int_list, default=None,
                            help="batch sizes (default 8; 8,32 on CUDA)")
        parser.add_argument("--precisions", default=None,
                            help="PMR's precisions to time (default: every one available)")
        parser.add_argument("--runtimes", default=None,
                            help=f"PMR's runtimes to time (default: {','.join(RUNTIMES)})")
        parser.add_argument("--device", default="cpu")
        parser.add_argument("--rounds", type=int, default=5)
        parser.add_argument("--images", default=None, help="folder of JPEG images (default: "
                            "the shared COCO evaluation images, else the darknet demo images)")
        parser.add_argument("--count", type=int, default=32, help="images per round")
        parser.add_argument("--input-size", type=int, default=None)
        parser.add_argument("--no-peers", action="store_true",
                            help="PMR only: no OpenCV DNN, ONNX Runtime or OpenVINO loops")
        parser.add_argument("--json-out", default=None, help="also write the JSON here")

    def handle(self, *args, models, batches, precisions, runtimes, device, rounds, images,
               count, input_size, no_peers, json_out, **options):
        target = resolve_device(device)
        batches = batches or ((8, 32) if target.type == "cuda" else (8,))
        jpegs = self._jpegs(images, count)
        gemm = gemm_gflops()
        self.stderr.write(f"fp32 matmul: {gemm:.0f} GFLOP/s on {torch.get_num_threads()} "
                          "threads")
        results, stages, gflops = [], [], {}
        for name in (m.strip() for m in models.split(",")):
            if name not in MODELS:
                raise CommandError(f"unknown model {name!r} (known: {', '.join(MODELS)})")
            cfg, weights, names = self._model_files(name)
            gflops[name] = spec_gflops(parse_cfg(cfg, input_size))
            measured, staged = run_benchmark(
                model=name, cfg=cfg, weights=weights, names=names, jpegs=jpegs,
                batches=batches, device=str(target), rounds=rounds, peers=not no_peers,
                precisions=_names(precisions), runtime_names=_names(runtimes),
                input_size=input_size, gemm=gemm, log=lambda line: self.stderr.write(line))
            results += measured
            stages += staged
        report = as_json(results, stages, gemm=gemm, gflops=gflops)
        report["images"] = len(jpegs)
        self._tables(report)
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

    def _jpegs(self, folder: str | None, count: int) -> list[bytes]:
        candidates = [Path(folder)] if folder else [SHARED_TESTDATA / "coco128_val2017" / "images",
                                                    SHARED_TESTDATA / "darknet"]
        for directory in candidates:
            if not directory.is_dir():
                continue
            files = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if files:
                return [files[i % len(files)].read_bytes() for i in range(count)]
        raise CommandError(f"no image folder found ({', '.join(map(str, candidates))})")

    def _tables(self, report: dict) -> None:
        cpu = report["cpu"]
        self.stdout.write(f"{cpu}, {report['threads']} threads, fp32 matmul "
                          f"{report['gemm_fp32_gflops']:.0f} GFLOP/s")
        header = (f"{'model':<12} {'entrant':<6} {'runtime':<12} {'prec':<5} {'mode':<9} "
                  f"{'batch':>5} {'ms/img':>8} {'img/s':>7} {'% matmul':>8}")
        self.stdout.write(header)
        self.stdout.write("-" * len(header))
        for r in sorted(report["measurements"],
                        key=lambda r: (r["model"], r["mode"], r["batch"], -r["images_per_second"])):
            share = f"{100 * r['gemm_share']:.0f}" if r["gemm_share"] else ""
            self.stdout.write(
                f"{r['model']:<12} {r['entrant']:<6} {r['runtime']:<12} {r['precision']:<5} "
                f"{r['mode']:<9} {r['batch']:>5} {r['ms_per_image']:>8.1f} "
                f"{r['images_per_second']:>7.1f} {share:>8}")
        header = (f"{'model':<12} {'runtime':<12} {'prec':<5} {'batch':>5} {'decode':>7} "
                  f"{'letterbox':>9} {'forward':>8} {'heads+NMS':>9}  (ms per image)")
        self.stdout.write("")
        self.stdout.write(header)
        self.stdout.write("-" * len(header))
        for s in report["stages"]:
            self.stdout.write(
                f"{s['model']:<12} {s['runtime']:<12} {s['precision']:<5} {s['batch']:>5} "
                f"{s['decode_ms']:>7.1f} {s['letterbox_ms']:>9.1f} {s['forward_ms']:>8.1f} "
                f"{s['postprocess_ms']:>9.1f}")
