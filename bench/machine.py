"""What the benchmarks say about the machine they ran on."""

from __future__ import annotations

from pathlib import Path


def cpuinfo(field: str) -> str:
    """A field of Linux's /proc/cpuinfo (its first processor); "?" elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(field):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"
