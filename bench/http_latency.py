"""What the HTTP path adds to the engine, and what micro-batching buys under load.

Starts PMR for real (gunicorn + one Celery worker) on Redis — REDIS_URL, default
redis://127.0.0.1:6379/0 — and on DATABASE_URL when set (else SQLite), then measures
on one 640x480 JPEG:

1. the engine's own inference time: Detector.detect on the decoded image, in this
   process, with the worker's settings (model, device, precision);
2. the HTTP path: POST /api/detect/image, one client, request to response; what it adds
   is taken two ways: its p50 minus the engine's p50, and per request, its time minus
   the inference time the worker reports for that very request (which a noisy machine
   cannot skew the way it skews two separately measured medians);
3. throughput with 1 client and with 16 concurrent clients, with the CPU time each part
   of the stack spent per request meanwhile (worker, web processes, PostgreSQL, Redis,
   and the clients themselves, which share the machine).

Engine and HTTP timings are taken in alternating rounds, so that a noisy machine slows
both alike; figures are medians. Prints a table and JSON (also written to --json-out).

    python bench/http_latency.py [--rounds 5] [--per-round 20] [--seconds 20]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pmr.settings")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")

import django  # noqa: E402

django.setup()

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import requests  # noqa: E402
from PIL import Image  # noqa: E402

from engine import decode_image  # noqa: E402
from jobs.inference import get_detector  # noqa: E402
from tests.integration.service import Service  # noqa: E402

SHARED = ROOT.parent / "shared" / "testdata" / "darknet" / "dog.jpg"


def test_image() -> bytes:
    """A 640x480 JPEG: the shared dog photo resized, or noise where it is absent."""
    if SHARED.exists():
        image = Image.open(SHARED).convert("RGB").resize((640, 480))
    else:
        image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (480, 640, 3),
                                                                  dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def post(session: requests.Session, service: Service, data: bytes) -> tuple[float, float]:
    """One request: (seconds from request to response, the worker's inference seconds)."""
    start = time.perf_counter()
    response = session.post(f"{service.base_url}/api/detect/image", headers=service.headers(),
                            files={"image": ("bench.jpg", data, "image/jpeg")}, timeout=120)
    elapsed = time.perf_counter() - start
    if response.status_code != 201:
        raise RuntimeError(f"{response.status_code}: {response.text[:300]}")
    return elapsed, response.json()["timing"]["inference_ms"] / 1000


def _tree_cpu(process: psutil.Process) -> float:
    """CPU seconds (user + system) of a process and its children so far."""
    total = 0.0
    for each in [process, *process.children(recursive=True)]:
        try:
            times = each.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def _own_cpu() -> float:
    """This process's CPU seconds, without its children (the service's processes)."""
    times = psutil.Process().cpu_times()
    return times.user + times.system


def cpu_by_part(service: Service) -> dict[str, float]:
    """CPU seconds so far of each part of the stack on this machine: the worker, the web
    processes, PostgreSQL, Redis, and this process (the clients)."""
    parts = {"worker": _tree_cpu(psutil.Process(service.processes["worker1"].pid)),
             "web": _tree_cpu(psutil.Process(service.processes["web"].pid)),
             "clients (this process)": _own_cpu()}
    for name, binary in (("postgresql", "postgres"), ("redis", "redis-server")):
        total = 0.0
        for each in psutil.process_iter(["name"]):
            if each.info["name"] and each.info["name"].startswith(binary):
                try:
                    times = each.cpu_times()
                    total += times.user + times.system
                except psutil.Error:
                    pass
        parts[name] = total
    return parts


def throughput(service: Service, data: bytes, clients: int, seconds: float) -> dict:
    cpu_before = cpu_by_part(service)
    stop = time.monotonic() + seconds
    latencies: list[float] = []
    lock = threading.Lock()

    def client() -> None:
        session = requests.Session()
        while time.monotonic() < stop:
            elapsed, _ = post(session, service, data)
            with lock:
                latencies.append(elapsed)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - start
    cpu_after = cpu_by_part(service)
    cpu_ms = {part: 1000 * (cpu_after[part] - cpu_before[part]) / max(1, len(latencies))
              for part in cpu_before}
    recent = requests.get(f"{service.base_url}/api/jobs", headers=service.headers(),
                          params={"page_size": min(len(latencies), 500)}, timeout=60).json()
    sizes = [job["timing"]["batch_size"] for job in recent["results"]]
    return {"clients": clients, "requests": len(latencies),
            "mean_batch_size": statistics.mean(sizes) if sizes else None,
            "cpu_ms_per_request": cpu_ms, "cpu_busy_share": sum(cpu_ms.values()) * len(
                latencies) / 1000 / wall / (os.cpu_count() or 1),
            "requests_per_second": len(latencies) / wall,
            "p50_ms": 1000 * statistics.median(latencies),
            "p95_ms": 1000 * float(np.percentile(latencies, 95))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20.0, help="per throughput run")
    parser.add_argument("--json-out", default=str(ROOT / "bench" / "results" / "http.json"))
    args = parser.parse_args()

    data = test_image()
    # Thousands of requests a minute: the default rate limits (uploads, and all requests)
    # would answer 429.
    service = Service.create(Path(tempfile.mkdtemp(prefix="pmr-bench-")),
                             THROTTLE_DETECT_RATE="100000/minute",
                             THROTTLE_USER_RATE="100000/minute")
    try:
        service.start_worker(concurrency=16)
        service.start_web()
        service.wait_ready()
        detector = get_detector()
        image = decode_image(data)
        session = requests.Session()
        for _ in range(5):  # warm both paths
            detector.detect([image])
            post(session, service, data)
        engine, http, inferences = [], [], []
        for round_number in range(args.rounds):
            for _ in range(args.per_round):
                start = time.perf_counter()
                detector.detect([image])
                engine.append(time.perf_counter() - start)
            for _ in range(args.per_round):
                elapsed, inference = post(session, service, data)
                http.append(elapsed)
                inferences.append(inference)
            print(f"round {round_number + 1}/{args.rounds}", file=sys.stderr)
        one = throughput(service, data, 1, args.seconds)
        sixteen = throughput(service, data, 16, args.seconds)
    finally:
        service.close()

    engine_ms, http_ms = 1000 * statistics.median(engine), 1000 * statistics.median(http)
    report = {
        "image": "640x480 JPEG", "backends": service.backends,
        "model": detector.network.spec.path, "device": str(detector.device),
        "precision": detector.precision,
        "engine_inference_p50_ms": engine_ms, "http_p50_ms": http_ms,
        "http_p95_ms": 1000 * float(np.percentile(http, 95)),
        "http_overhead_p50_ms": http_ms - engine_ms,
        "http_overhead_paired_p50_ms": 1000 * statistics.median(
            h - i for h, i in zip(http, inferences, strict=True)),
        "worker_inference_p50_ms": 1000 * statistics.median(inferences),
        "throughput_1_client": one, "throughput_16_clients": sixteen,
        "throughput_ratio_16_vs_1": sixteen["requests_per_second"] / one["requests_per_second"],
    }
    print(f"{'engine inference p50':<28}{engine_ms:8.1f} ms")
    print(f"{'HTTP request p50':<28}{http_ms:8.1f} ms")
    print(f"{'HTTP overhead p50':<28}{http_ms - engine_ms:8.1f} ms   (target <= 20)")
    print(f"{'  per request (paired) p50':<28}{report['http_overhead_paired_p50_ms']:8.1f} ms   "
          f"(the worker's inference p50 {report['worker_inference_p50_ms']:.1f} ms)")
    for run in (one, sixteen):
        print(f"{run['clients']:>2} client(s): {run['requests_per_second']:6.1f} req/s, "
              f"p50 {run['p50_ms']:.0f} ms, p95 {run['p95_ms']:.0f} ms, "
              f"mean batch {run['mean_batch_size']:.1f}")
        print("    CPU ms per request: " + ", ".join(
            f"{part} {ms:.1f}" for part, ms in run["cpu_ms_per_request"].items())
            + f" (the CPUs {100 * run['cpu_busy_share']:.0f} % busy)")
    print(f"{'16 vs 1 client throughput':<28}{report['throughput_ratio_16_vs_1']:8.2f} x   "
          "(target >= 2)")
    print(json.dumps(report, indent=2))
    Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json_out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
