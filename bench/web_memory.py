"""A web process's cost: gunicorn's start-up time and each worker's memory, per checkout.

Starts gunicorn (`pmr/gunicorn.conf.py`, 2 workers, SQLite migrated once per checkout)
from each checkout given (e.g. this one and a `git worktree` of an older commit), in
interleaved rounds; per round: the seconds from spawn to the first 200 of /healthz with
every worker booted, then, after requests that load every URL and the admin, each worker's
resident (RSS) and unique (USS: what the process alone holds) memory, and whether it has
loaded PyTorch. Prints a table (medians) and JSON (also written to --json-out).

    python bench/web_memory.py [--rounds 5] [LABEL=CHECKOUT ...]   # default: here
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pmr.settings")

from bench.machine import cpuinfo  # noqa: E402
from tests.integration.service import free_port  # noqa: E402

WORKERS = 2


def environment(folder: Path) -> dict:
    return {**os.environ, "DJANGO_SETTINGS_MODULE": "pmr.settings",
            "DATABASE_URL": f"sqlite:///{folder / 'db.sqlite3'}", "PMR_VAR_DIR": str(folder),
            "MEDIA_ROOT": str(folder / "media"), "SECRET_KEY": "bench-web-memory",
            "CELERY_BROKER_URL": "filesystem://", "WEB_CONCURRENCY": str(WORKERS),
            "GUNICORN_ACCESS_LOG": "", "PYTHONDONTWRITEBYTECODE": "1"}


def loads_torch(pid: int) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text(errors="replace")


def one_round(checkout: Path, folder: Path) -> dict:
    port = free_port()
    env = {**environment(folder), "PORT": str(port)}
    began = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "pmr.wsgi:application",
                               "--config", "pmr/gunicorn.conf.py"], cwd=checkout, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        master = psutil.Process(server.pid)
        url = f"http://127.0.0.1:{port}"
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"gunicorn in {checkout} exited ({server.returncode})")
            try:
                booted = len(master.children()) == WORKERS
                if booted and requests.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.02)
        ready_s = time.perf_counter() - began
        # Each worker serves a few of these (gthread: one connection per request).
        for _ in range(4 * WORKERS):
            for path in ("/api/", "/api/schema/", "/readyz", "/admin/login/", "/metrics"):
                requests.get(f"{url}{path}", timeout=30)
        workers = master.children()
        memory = [p.memory_full_info() for p in workers]
        return {"ready_s": ready_s,
                "rss_mb": statistics.mean(m.rss for m in memory) / 2**20,
                "uss_mb": statistics.mean(m.uss for m in memory) / 2**20,
                "torch_loaded": any(loads_torch(p.pid) for p in workers)}
    finally:
        os.killpg(server.pid, 15)
        server.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkouts", nargs="*", default=[f"here={ROOT}"],
                        help="LABEL=PATH of a PMR checkout (the same .venv runs each)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json-out", default=str(ROOT / "bench" / "results" /
                                                  "web_memory.json"))
    args = parser.parse_args()
    checkouts = dict(item.split("=", 1) for item in args.checkouts)
    with tempfile.TemporaryDirectory() as tmp:
        folders = {}
        for label, checkout in checkouts.items():
            folders[label] = Path(tmp) / label
            folders[label].mkdir()
            subprocess.run([sys.executable, "manage.py", "migrate", "--noinput",
                            "--verbosity", "0"], cwd=checkout,
                           env=environment(folders[label]), check=True)
        rounds = {label: [] for label in checkouts}
        for _ in range(args.rounds):  # interleaved: the machine's noise hits each alike
            for label, checkout in checkouts.items():
                rounds[label].append(one_round(Path(checkout), folders[label]))
    summary = {label: {"ready_s": statistics.median(r["ready_s"] for r in runs),
                       "rss_mb": statistics.median(r["rss_mb"] for r in runs),
                       "uss_mb": statistics.median(r["uss_mb"] for r in runs),
                       "torch_loaded": any(r["torch_loaded"] for r in runs)}
               for label, runs in rounds.items()}
    machine = {"cpu": cpuinfo("model name"), "cpu_family": cpuinfo("cpu family"),
               "cores": os.cpu_count()}
    print(f"{machine['cpu']} (family {machine['cpu_family']}), {machine['cores']} cores; "
          f"gunicorn, {WORKERS} workers; medians of {args.rounds} interleaved rounds")
    print(f"{'checkout':<12} {'ready s':>8} {'RSS MB':>8} {'USS MB':>8}  torch")
    for label, row in summary.items():
        print(f"{label:<12} {row['ready_s']:8.2f} {row['rss_mb']:8.0f} {row['uss_mb']:8.0f}  "
              f"{'yes' if row['torch_loaded'] else 'no'}")
    result = {"machine": machine, "summary": summary, "rounds": rounds}
    Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json_out).write_text(json.dumps(result, indent=2))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
