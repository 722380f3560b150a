"""What a benchmark's sizes say about a size it did not run: the growth between its two largest
sizes, as a power law (the benches print 100,000 services "on paper" from 1,000 and 10,000)."""

from __future__ import annotations

import math
from typing import Callable


def estimate(rows: list[dict], value: Callable[[dict], float], target: int = 100_000, digits: int = 1) -> str:
    """value(row) at `target` services from the growth between the two largest sizes."""
    if len(rows) < 2:
        return "n/a"
    a, b = rows[-2], rows[-1]
    va, vb = value(a), value(b)
    if va <= 0 or vb <= 0:
        return f"{vb:.2f}"
    exponent = math.log(vb / va) / math.log(b["services"] / a["services"])
    return f"{vb * (target / b['services']) ** exponent:.{digits}f} (growth n^{exponent:.2f})"
