"""herolog's benchmarks: each peer measured in the same run as herolog, medians and ratios.

Every benchmark prints its figures for people, and a ``RESULT {json}`` line per headline
figure for ``python -m bench``, which runs them all and writes BENCHMARKS.md and
bench/results.json.
"""

from __future__ import annotations

import json


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
