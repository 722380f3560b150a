"""Reading a single-service request trace (`timestamp,requests`, 60 s or 1 s bins, `.gz` too):
per-minute counts with NaN where the trace has no rows, and per-second counts for 1 s traces.
Used by the backtest, the demo, the benchmarks and the tests' Prometheus back-fill."""

from __future__ import annotations

import csv
import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Trace:
    name: str
    start_minute: int
    minutes: np.ndarray  # per-minute counts, NaN where the trace has no rows
    seconds: np.ndarray | None  # per-second counts when the trace is 1 s; None for 60 s traces
    gap_seconds: np.ndarray  # True where the trace has no data


def load_trace(path: Path) -> Trace:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        rows = [(int(float(r["timestamp"])), float(r["requests"])) for r in csv.DictReader(f)]
    if not rows:
        raise ValueError(f"{path} has no rows")
    ts = np.array([r[0] for r in rows])
    values = np.array([r[1] for r in rows])
    step = int(np.median(np.diff(ts))) if len(ts) > 1 else 60
    if step not in (1, 60):
        raise ValueError(f"{path}: bins must be 1 s or 60 s, found {step} s")
    start = ts[0] - ts[0] % 60
    n_seconds = int(ts[-1] + step - start)
    n_seconds += (-n_seconds) % 60
    per_second = np.zeros(n_seconds)
    has_data = np.zeros(n_seconds, dtype=bool)
    for t, v in zip(ts, values):
        offset = int(t - start)
        has_data[offset:offset + step] = True
        per_second[offset] += v  # a 60 s bin's count sits at its first second until spread
    minute_has = has_data.reshape(-1, 60).any(axis=1)
    minutes = per_second.reshape(-1, 60).sum(axis=1)
    minutes[~minute_has] = np.nan
    return Trace(path.name, int(start // 60), minutes, per_second if step == 1 else None, ~has_data)
