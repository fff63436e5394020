"""herolog's benchmarks: each peer measured in the same run as herolog, medians and ratios.

Every benchmark prints its figures for people, and a ``RESULT {json}`` line per headline
figure for ``python -m bench``, which runs them all and writes BENCHMARKS.md and
bench/results.json.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        memory = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
        ram = f"{int(memory) / 1024 / 1024:.1f} GB RAM"
    except OSError:
        ram = "unknown RAM"
    return (
        f"{os.cpu_count()} CPUs ({model}), {ram}, {platform.system()} {platform.release()},"
        f" Python {platform.python_version()}"
    )


def measured_with(*programs: str) -> None:
    """Print what the figures below were measured with, and on what machine."""
    from herolog import __version__

    print(f"measured with herolog {__version__}", *programs, sep=", ", end="")
    print(f"; on {machine()}")


def result(
    name: str,
    value: float,
    unit: str,
    *,
    target: str,
    met: bool | None,
    peer: str | None = None,
    ratio: float | None = None,
) -> None:
    """Print one headline figure where ``python -m bench`` collects it."""
    record = {
        "name": name,
        "value": round(value, 3),
        "unit": unit,
        "peer": peer,
        "ratio": None if ratio is None else round(ratio, 3),
        "target": target,
        "met": met,
    }
    print("RESULT " + json.dumps(record), flush=True)
