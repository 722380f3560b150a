"""Fixtures for the forecast function: a published forecaster, and a real Prometheus back-filled
(promtool) with eight days of two shared traces under every preset's metric names and labels."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from localmode.processes import Server, start_prometheus
from tests.support.servers import SHARED
from training.traces import load_trace
from localmode.prometheus_backfill import create_blocks, write_openmetrics
from training.publish_forecaster import publish

DAYS = 8
# The back-filled window ends at this minute (Friday 2024-11-22 12:00 UTC); traces are moved by whole
# weeks so that their time of day and day of week stay true.
END_MINUTE = 28_870_560 + 720
GAP = (END_MINUTE - 200, END_MINUTE - 190)  # ten minutes where Prometheus scraped nothing


@dataclass
class Backfill:
    data_dir: Path
    series: dict[str, np.ndarray]
    """namespace/name -> counts over [END_MINUTE - DAYS*1440, END_MINUTE), NaN in the gap."""
    start_minute: int


def _week_aligned(path: Path, days: int) -> np.ndarray:
    trace = load_trace(path)
    weeks = (END_MINUTE - trace.start_minute) // 10080
    shifted_start = trace.start_minute + weeks * 10080  # at or before END_MINUTE
    counts = np.full(days * 1440, np.nan)
    take_from = END_MINUTE - days * 1440 - shifted_start  # index into the trace
    for i in range(days * 1440):
        j = take_from + i
        while j >= len(trace.minutes):
            j -= 10080
        while j < 0:
            j += 10080
        counts[i] = trace.minutes[j]
    return counts


@pytest.fixture(scope="session")
def backfill(tmp_path_factory) -> Backfill:
    base = tmp_path_factory.mktemp("backfill")
    start = END_MINUTE - DAYS * 1440
    series = {
        "models/sd-lora": _week_aligned(SHARED / "traces" / "alibaba_sd_lora_2024_train.csv", DAYS),
        "models/nasa": _week_aligned(SHARED / "traces" / "nasa_http_1995.csv", DAYS),
    }
    om = base / "history.om"
    with om.open("w") as out:
        write_openmetrics(out, series, start, gaps=[GAP])
    create_blocks(om, base / "data")
    for values in series.values():
        values[GAP[0] - start: GAP[1] - start] = np.nan
    return Backfill(base / "data", series, start)


@pytest.fixture(scope="session")
def forecaster_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("forecaster")
    publish(root, n_series=24, days=9, max_train_rows=8000, max_iter=30)
    return root


@pytest.fixture
def backfilled_prometheus(backfill, tmp_path) -> Iterator[Server]:
    """A Prometheus of its own per test (tests kill it), on a copy of the back-filled blocks."""
    base = tmp_path / "prometheus"
    shutil.copytree(backfill.data_dir, base / "data")
    server = start_prometheus(base)
    yield server
    server.stop()
