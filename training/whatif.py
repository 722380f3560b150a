"""What-if on the user's own Prometheus: every matching service's per-minute history, read
through the forecast function's own presets and Prometheus code, as traces for the backtest.

    python -m training.backtest --prometheus URL [--preset knative-1.21] [--selector 'namespace="models"']
                                [--days 7] [--end 2024-11-22T12:00:00Z] [--format table|json] [--plots DIR]

The query is the one the function would send (forecast.settings.ForecastSettings.from_env with
METRICS_PRESET, SERVICE_SELECTOR and HEARTBEAT_SELECTOR, then forecast.prometheus_source:
`query_range` at a 60 s step, one day a query), and its reading is the function's: a minute the
preset's scrape job was not scraped is a gap (NaN, not scored by the backtest), a scraped minute
without a series is 0. Each service is then backtested as a CSV trace would be
(training/backtest.run), and when there are several, the fleet too (training/fleet_backtest,
where a gap counts as idle: the fleet form has no gaps).
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone

import numpy as np
from forecast.prometheus_source import PrometheusSource
from forecast.settings import ForecastSettings
from tqdm import tqdm

from training.fleet_trace import FleetTrace
from training.traces import Trace

DAY = 1440


class WhatIfError(RuntimeError):
    """Nothing to backtest: no service matched, or the span is too short."""


def parse_end(text: str | None) -> int:
    """The epoch minute the history ends at (exclusive): an ISO time, epoch seconds, or, when
    not given, the last whole minute."""
    if not text:
        return int(datetime.now(timezone.utc).timestamp() // 60)
    if text.replace(".", "", 1).isdigit():
        return int(float(text) // 60)
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return int(when.timestamp() // 60)


def read_history(url: str, preset: str, selector: str, days: float, end_minute: int, heartbeat: str | None = None,
                 chunk_minutes: int = DAY, timeout_s: int = 60, progress: bool = True) -> dict[str, np.ndarray]:
    """namespace/service -> requests per minute over [end_minute - days * 1440, end_minute)."""
    env = {"METRICS_PRESET": preset, "SERVICE_SELECTOR": selector, "PROMETHEUS_URL": url,
           "PROMETHEUS_TIMEOUT_SECONDS": str(timeout_s)}
    if heartbeat is not None:
        env["HEARTBEAT_SELECTOR"] = heartbeat
    settings = ForecastSettings.from_env(env)
    source = PrometheusSource(settings.prometheus_url, settings.query, settings.prometheus_timeout_s, 60)
    start = end_minute - int(round(days * DAY))
    readings = []
    try:
        chunks = range(start, end_minute, chunk_minutes)
        for first in tqdm(chunks, desc=f"reading {preset} from Prometheus", unit="day", file=sys.stderr,
                          disable=not progress):
            readings.append(source.read(first, min(end_minute, first + chunk_minutes)))
    finally:
        source.close()
    names = sorted({name for r in readings for name in r.counts})
    return {name: np.concatenate([r.series_for(name) for r in readings]) for name in names}


def as_trace(name: str, counts: np.ndarray, start_minute: int) -> Trace:
    """A per-minute series as the CSV reader would give it (60 s bins: no per-second counts)."""
    counts = np.asarray(counts, dtype=float)
    return Trace(name.replace("/", "_"), start_minute, counts, None, np.repeat(np.isnan(counts), 60))


def as_fleet(name: str, series: dict[str, np.ndarray], start_minute: int, seed: int = 0) -> FleetTrace:
    """The services as one fleet (60 s bins; gap minutes count as idle)."""
    services = tuple(sorted(series))
    n = len(next(iter(series.values())))
    matrix = np.nan_to_num(np.stack([series[s] for s in services])).astype(np.int64)
    who, bins = np.nonzero(matrix)
    order = np.lexsort((who, bins))
    bins, who = bins[order], who[order]
    return FleetTrace(name, 60, start_minute * 60, (start_minute + n) * 60, services, bins.astype(np.int64),
                      who.astype(np.int64), matrix[who, bins], seed)


def iso(minute: int) -> str:
    return datetime.fromtimestamp(minute * 60, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
