"""The CUDA path, checked and timed in one short run (``bench/gpu_check.sh`` runs it on a
GPU machine; see the README, "Benchmarks").

1. Raw parity: the decoded heads of CUDA fp32 and fp16 against CPU fp32 on darknet's 7
   demo images (the same letterboxed batch; fp32 within 1e-3, fp16 within 1e-2), fp32
   both as PMR serves it (cuDNN's TF32 convolutions, PyTorch's default) and with TF32 off.
2. Accuracy: ``evaluate`` on coco128 in CUDA fp16 and fp32, darknet's protocol; fp16
   within 0.5 mAP@0.5 points of fp32.
3. Timing, fp16: yolov3-tiny (official weights) and yolov3 (official weights if present,
   else random ones, fine for timing) at batches 1, 8, 32 and 64 — forward only (a
   letterboxed batch already on the GPU) and end to end through ``Detector.detect``
   (decoded images in; the letterbox runs on the GPU, then the forward pass, decode and
   NMS), images/s, medians of timed repetitions after warm-ups.
4. ONNX Runtime's CUDA (and TensorRT) execution providers, where the installed
   ONNX Runtime has them (``onnxruntime-gpu``): parity with CPU fp32 and timing.

Needs PyTorch, NumPy, OpenCV, Pillow and pycocotools (the engine has no Django), and the
data under ``--data`` (``gpu_check.sh prepare`` gathers it). The JSON is written after
every step, so a run cut short keeps what it measured. ``--cpu-dry-run`` runs the same
code on the CPU (fp32 in place of fp16, a few images, one repetition): a check that the
script works, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the engine, from a checkout

from engine.benchmark import cpu_model
from engine.cfg import parse_cfg
from engine.detector import Detector
from engine.evaluate import evaluate
from engine.image import decode_image
from engine.model import Darknet
from engine.runtimes import ExportCache
from engine.types import read_names
from engine.weights import random_darknet_weights, read_darknet_weights

DEMO = ["dog.jpg", "eagle.jpg", "giraffe.jpg", "horses.jpg", "kite.jpg", "person.jpg",
        "scream.jpg"]
TOLERANCE = {"fp32": 1e-3, "fp16": 1e-2}
MAP_TOLERANCE = 0.005  # half a point
BATCHES = (1, 8, 32, 64)
BUDGET_SECONDS = 7 * 60  # stop starting new work past this: the run must fit in 8 minutes


class Check:
    def __init__(self, out: Path, dry_run: bool) -> None:
        self.out = out
        self.started = time.monotonic()
        self.report: dict = {"dry_run": dry_run, "steps": {}, "errors": {}}

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def step(self, name: str, work: Callable[[], dict]) -> None:
        """Run one step, keep its result (or its error) and write the JSON."""
        if self.elapsed() > BUDGET_SECONDS:
            self.report["errors"][name] = "skipped: out of time"
        else:
            began = time.monotonic()
            print(f"[{self.elapsed():6.1f} s] {name}", flush=True)
            try:
                self.report["steps"][name] = {**work(), "seconds": time.monotonic() - began}
            except Exception:
                self.report["errors"][name] = traceback.format_exc(limit=8)
                print(self.report["errors"][name], flush=True)
        self.report["seconds"] = self.elapsed()
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(json.dumps(self.report, indent=2))


def max_difference(ours: list[torch.Tensor], reference: list[torch.Tensor]) -> float:
    return max(float((a.float().cpu() - b).abs().max()) for a, b in zip(ours, reference,
                                                                         strict=True))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run: Callable[[], None], device: torch.device, *, warmups: int,
          repeats: int) -> float:
    """Median seconds of ``run`` over ``repeats`` timed calls, after ``warmups``."""
    for _ in range(warmups):
        run()
    synchronize(device)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path(".gpu"),
                        help="weights/, darknet/ and coco128_val2017/ (gpu_check.sh prepare)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/gpu_check.json"))
    parser.add_argument("--cpu-dry-run", action="store_true",
                        help="the same code on the CPU, tiny: checks that the script works")
    args = parser.parse_args(argv)
    dry = args.cpu_dry_run
    if not dry and not torch.cuda.is_available():
        parser.error("CUDA is not available here (use --cpu-dry-run to check the script)")
    device = torch.device("cpu" if dry else "cuda")
    half = "fp32" if dry else "fp16"  # the CPU has no fp16 path: fp32 stands in for it
    half_label = "fp32_standing_in_for_fp16" if dry else "fp16"
    repeats, warmups = (1, 1) if dry else (10, 3)
    batches = (1, 8) if dry else BATCHES
    eval_limit = 8 if dry else None

    weights_dir, darknet_dir, coco_dir = (args.data / "weights", args.data / "darknet",
                                          args.data / "coco128_val2017")
    check = Check(args.out, dry)
    check.report["environment"] = {
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else cpu_model(),
        "cpu": cpu_model(),
        "python": platform.python_version(), "cpu_threads": torch.get_num_threads(),
    }
    names = read_names(weights_dir / "coco.names")
    tiny_cfg, tiny_weights = weights_dir / "yolov3-tiny.cfg", weights_dir / "yolov3-tiny.weights"
    demo = [decode_image(darknet_dir / name) for name in DEMO]
    coco_images = sorted((coco_dir / "images").glob("*.jpg"))
    coco_json = next(coco_dir.glob("*.json"))

    def tiny(**options) -> Detector:
        return Detector.from_files(tiny_cfg, tiny_weights, weights_dir / "coco.names",
                                   runtime="torch", **options)

    reference = tiny(device="cpu", precision="fp32")
    cpu_batch, _ = reference.preprocess(demo)
    cpu_heads = reference.forward(cpu_batch)

    def parity() -> dict:
        found: dict = {}
        for label, precision, tf32 in (("fp32", "fp32", True), ("fp32_no_tf32", "fp32", False),
                                       (half_label, half, True)):
            torch.backends.cudnn.allow_tf32 = tf32
            try:
                detector = tiny(device=str(device), precision=precision)
                difference = max_difference(detector.forward(cpu_batch.to(device)), cpu_heads)
            finally:
                torch.backends.cudnn.allow_tf32 = True
            found[label] = {"max_abs_difference": difference,
                            "tolerance": TOLERANCE[precision],
                            "passed": difference <= TOLERANCE[precision]}
        return found

    check.step("parity", parity)

    def accuracy() -> dict:
        scores = {}
        for precision in dict.fromkeys(("fp32", half)):
            detector = tiny(device=str(device), precision=precision, max_batch=32)
            result = evaluate(detector, coco_dir / "images", coco_json=coco_json,
                              limit=eval_limit)
            scores[precision] = {"map50": result.map50, "map50_95": result.map50_95,
                                 "images": result.images}
        difference = abs(scores[half]["map50"] - scores["fp32"]["map50"])
        return {**scores, "map50_difference": difference, "tolerance": MAP_TOLERANCE,
                "passed": difference <= MAP_TOLERANCE}

    check.step("accuracy", accuracy)

    pictures = [decode_image(path) for path in coco_images[:max(batches)]]

    def timing(model: str, cfg: Path, weights: Path | None) -> Callable[[], dict]:
        def work() -> dict:
            spec = parse_cfg(cfg)
            network = Darknet(spec)
            if weights is not None and weights.is_file():
                _, blocks = read_darknet_weights(weights, spec)
                kind = "official"
            else:
                blocks = random_darknet_weights(spec, seed=0, objectness_bias=-6.0)
                kind = "random"
            network.load_weights(blocks)
            detector = Detector(network, names, device=str(device), precision=half,
                                max_batch=max(batches), runtime="torch")
            rows = []
            for batch in (b for b in batches if not (dry and model != "yolov3-tiny" and b > 1)):
                images = [pictures[i % len(pictures)] for i in range(batch)]
                inputs, _ = detector.preprocess(images)  # letterboxed on the device
                forward = timed(lambda inputs=inputs: detector.forward(inputs), device,
                                warmups=warmups, repeats=repeats)
                end_to_end = timed(lambda images=images: detector.detect(images), device,
                                   warmups=warmups, repeats=repeats)
                rows.append({"batch": batch, "forward_images_per_second": batch / forward,
                             "end_to_end_images_per_second": batch / end_to_end,
                             "forward_ms_per_batch": 1000 * forward,
                             "end_to_end_ms_per_batch": 1000 * end_to_end})
                print(f"  {model} b{batch}: forward {batch / forward:.0f} img/s, end to end "
                      f"{batch / end_to_end:.0f} img/s", flush=True)
            return {"weights": kind, "precision": half, "rows": rows}

        return work

    check.step("timing_yolov3-tiny", timing("yolov3-tiny", tiny_cfg, tiny_weights))
    full_cfg = weights_dir / "yolov3.cfg"
    if not full_cfg.is_file():
        full_cfg = darknet_dir / "yolov3.cfg"
    check.step("timing_yolov3", timing("yolov3", full_cfg, weights_dir / "yolov3.weights"))

    def onnxruntime_gpu() -> dict:
        import onnxruntime as ort

        available = ort.get_available_providers()
        gpu = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available]
        found: dict = {"onnxruntime": ort.__version__, "providers": available}
        if not gpu or dry:
            found["skipped"] = ("dry run" if dry else
                                "no CUDA or TensorRT provider: onnxruntime-gpu is not installed")
            return found
        cache = ExportCache(Path("/tmp/pmr-gpu-check-compiled"), tiny_weights)
        network = Darknet(parse_cfg(tiny_cfg))
        network.load_weights(read_darknet_weights(tiny_weights, network.spec)[1])
        detector = Detector(network, names, device=str(device), precision="fp32",
                            runtime="onnxruntime", cache=cache, max_batch=max(batches))
        found["session_providers"] = detector.backend.session.get_providers()
        difference = max_difference(detector.forward(cpu_batch), cpu_heads)
        found["parity"] = {"max_abs_difference": difference, "tolerance": TOLERANCE["fp32"],
                           "passed": difference <= TOLERANCE["fp32"]}
        rows = []
        for batch in batches[:3]:
            images = [pictures[i % len(pictures)] for i in range(batch)]
            inputs, _ = detector.preprocess(images)
            forward = timed(lambda inputs=inputs: detector.forward(inputs), device,
                            warmups=warmups, repeats=repeats)
            end_to_end = timed(lambda images=images: detector.detect(images), device,
                               warmups=warmups, repeats=repeats)
            rows.append({"batch": batch, "forward_images_per_second": batch / forward,
                         "end_to_end_images_per_second": batch / end_to_end})
        found["rows"] = rows
        return found

    check.step("onnxruntime_gpu", onnxruntime_gpu)
    def failed_in(step: dict) -> bool:
        return step.get("passed") is False or any(
            isinstance(value, dict) and value.get("passed") is False for value in step.values())

    failed = [name for name, step in check.report["steps"].items() if failed_in(step)]
    check.report["failed_checks"] = failed
    check.out.write_text(json.dumps(check.report, indent=2))
    print(f"wrote {check.out} after {check.elapsed():.0f} s; failed checks: {failed or 'none'}; "
          f"errors: {sorted(check.report['errors']) or 'none'}")
    return 1 if failed or check.report["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
