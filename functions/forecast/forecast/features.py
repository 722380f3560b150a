"""Features of a per-minute request series, from its own past only. Pure numpy.

A row describes (origin t, horizon h): the history is minutes < t, the target is minute t + h.
Counts are divided by the series' own scale (its mean over the last day, floored) so that one
global model serves quiet and busy services alike; log(scale) stays a feature so the model still
knows the absolute level, which is what P(any request) depends on. Gaps (NaN) count as no data,
never as idle: rolling features average over the minutes that have data, and the share of
minutes with data is a feature of its own.

Periods at minute resolution (`period_shares`): timers are the second trigger of Azure Functions
after HTTP (16%, "Serverless in the Wild"), jobs every 30 or 60 minutes or at a fixed time of day.
The day and week lags see the last one, once; a half-hourly or hourly job they do not see at all.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

DAY = 1440
WEEK = 7 * DAY
LAGS = (1, 2, 3, 4, 5, 10)
MIN_SCALE = 1.0
PERIODS = (30, 60, DAY)  # minutes: half-hourly and hourly timers, a fixed time of day
CYCLES = 4  # how many past cycles each period's share looks at
PHASE_SLACK = 1  # +-1 minute around the phase: a timer's requests straddle minute boundaries

FEATURE_NAMES = (
    [f"lag_{k}" for k in LAGS]
    + ["mean_15", "mean_60", "max_60", "nonzero_15", "nonzero_60", "nonzero_day",
       "log_minutes_since_request", "log_scale", "data_share_day",
       "yesterday", "yesterday_window_mean", "yesterday_window_nonzero",
       "last_week", "last_week_window_nonzero"]
    + [f"period_{p}_share" for p in PERIODS] + ["best_period_share"]
    + ["tod_sin", "tod_cos", "dow_sin", "dow_cos", "horizon"]
)


class SeriesIndex:
    """Prefix sums over a series so that any window's sum, count and nonzero count is O(1)."""

    def __init__(self, counts: np.ndarray):
        counts = np.asarray(counts, dtype=float)
        self.counts = counts
        self.valid = ~np.isnan(counts)
        filled = np.where(self.valid, counts, 0.0)
        self.filled = filled
        self.sum = np.concatenate(([0.0], np.cumsum(filled)))
        self.n = np.concatenate(([0], np.cumsum(self.valid)))
        self.nz = np.concatenate(([0], np.cumsum(filled > 0)))
        # minute index of the latest nonzero minute at or before i (-1 if none)
        idx = np.where(filled > 0, np.arange(len(filled)), -1)
        self.last_nonzero = np.maximum.accumulate(idx) if len(idx) else idx

    def window(self, start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(sum, minutes with data, nonzero minutes) over [start, end), clipped to the series."""
        size = len(self.counts)
        s = np.clip(start, 0, size)
        e = np.clip(end, 0, size)
        e = np.maximum(e, s)
        return self.sum[e] - self.sum[s], self.n[e] - self.n[s], self.nz[e] - self.nz[s]

    def mean(self, start: np.ndarray, end: np.ndarray) -> np.ndarray:
        total, n, _ = self.window(start, end)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, total / np.maximum(n, 1), np.nan)

    def nonzero_share(self, start: np.ndarray, end: np.ndarray) -> np.ndarray:
        _, n, nz = self.window(start, end)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, nz / np.maximum(n, 1), np.nan)

    def at(self, i: np.ndarray) -> np.ndarray:
        inside = (i >= 0) & (i < len(self.counts))
        out = np.full(i.shape, np.nan)
        out[inside] = self.counts[i[inside]]
        return out


def scale_at(index: SeriesIndex, origins: np.ndarray) -> np.ndarray:
    mean_day = index.mean(origins - DAY, origins)
    return np.maximum(np.nan_to_num(mean_day, nan=0.0), MIN_SCALE)


def build(index: SeriesIndex, origins: np.ndarray, horizon: int, start_minute: int) -> np.ndarray:
    """Feature rows for every (origin, h), origin-major: row = i * horizon + h."""
    t = np.asarray(origins, dtype=np.int64)
    scale = scale_at(index, t)
    per_origin = []
    for k in LAGS:
        per_origin.append(index.at(t - k) / scale)
    per_origin += [
        index.mean(t - 15, t) / scale,
        index.mean(t - 60, t) / scale,
        _window_max(index, t, 60) / scale,
        index.nonzero_share(t - 15, t),
        index.nonzero_share(t - 60, t),
        index.nonzero_share(t - DAY, t),
    ]
    last = index.last_nonzero[np.clip(t - 1, 0, None)] if len(index.counts) else np.full(t.shape, -1)
    last = np.where(t > 0, last, -1)
    since = np.where(last >= 0, t - last, WEEK)
    per_origin += [np.log1p(np.minimum(since, WEEK)), np.log(scale), index.window(t - DAY, t)[1] / DAY]
    base = np.repeat(np.stack(per_origin, axis=1), horizon, axis=0)

    h = np.tile(np.arange(horizon), len(t))
    target = np.repeat(t, horizon) + h
    rep_scale = np.repeat(scale, horizon)
    yesterday = index.at(target - DAY) / rep_scale
    y_mean = index.mean(target - DAY - 5, target - DAY + 6) / rep_scale
    y_nz = index.nonzero_share(target - DAY - 5, target - DAY + 6)
    week = index.at(target - WEEK) / rep_scale
    w_nz = index.nonzero_share(target - WEEK - 5, target - WEEK + 6)
    periods = period_shares(lambda lo, hi: index.window(lo, hi)[1:], target, np.repeat(t, horizon))
    minute_of_day = (start_minute + target) % DAY
    day_of_week = ((start_minute + target) // DAY + 3) % 7  # 1970-01-01 was a Thursday
    angle_d = 2 * np.pi * minute_of_day / DAY
    angle_w = 2 * np.pi * day_of_week / 7
    per_row = np.stack([yesterday, y_mean, y_nz, week, w_nz, *periods, np.sin(angle_d), np.cos(angle_d),
                        np.sin(angle_w), np.cos(angle_w), h.astype(float)], axis=1)
    return np.hstack([base, per_row])


def period_shares(window: Callable, target, origin) -> list[np.ndarray]:
    """For each period p of PERIODS, the share of the last CYCLES cycles that had a request
    within +-PHASE_SLACK minutes of the target minute's phase (minutes target - c * p), then the
    largest share (how strongly the series keeps its best period). A cycle counts only if its
    window lies wholly before the origin (no peeking) and has data (a gap is unknown, not idle);
    NaN where no cycle counts. `window(lo, hi)` gives (minutes with data, nonzero minutes) over
    [lo, hi); `target` and `origin` are arrays (per row) or ints (the live tick's one column)."""
    shares = []
    for p in PERIODS:
        hits, seen = 0, 0
        for c in range(1, CYCLES + 1):
            lo, hi = target - c * p - PHASE_SLACK, target - c * p + PHASE_SLACK + 1
            with_data, nonzero = window(lo, hi)
            usable = (lo >= 0) & (hi <= origin) & (with_data > 0)
            hits = hits + (usable & (nonzero > 0))
            seen = seen + usable
        shares.append(np.where(seen > 0, hits / np.maximum(seen, 1), np.nan))
    return shares + [np.fmax.reduce(shares)]  # fmax: NaN only where every share is NaN


def targets(index: SeriesIndex, origins: np.ndarray, horizon: int) -> np.ndarray:
    h = np.tile(np.arange(horizon), len(origins))
    return index.at(np.repeat(np.asarray(origins, dtype=np.int64), horizon) + h)


def _window_max(index: SeriesIndex, t: np.ndarray, width: int) -> np.ndarray:
    """Max over the last `width` minutes (NaN-aware), via a strided view: O(len(t) * width)."""
    padded = np.concatenate((np.full(width, np.nan), index.counts))
    rows = padded[(t[:, None] + np.arange(width)[None, :]).clip(0, len(padded) - 1)]
    with np.errstate(all="ignore"):
        out = np.nanmax(np.where(np.isnan(rows), -np.inf, rows), axis=1)
    return np.where(np.isfinite(out), out, np.nan)


def build_at_end(matrix: np.ndarray, horizon: int, start_minute: int) -> tuple[np.ndarray, np.ndarray]:
    """`build` for many series of equal length at once, each at origin = its end (the live
    tick): the same rows as `build(SeriesIndex(row), [len(row)], ...)` for every row, computed
    with column slices over the whole matrix instead of per series (10,000 services: one pass).
    `matrix` may be float32 (the forecast function's cache); sums accumulate in float64.
    Returns the rows and each series' scale (`scale_at` at its end), computed once here."""
    matrix = np.asarray(matrix)
    n, width = matrix.shape
    t = width

    def cols(start: int, end: int) -> np.ndarray:
        s, e = min(max(start, 0), width), min(max(end, 0), width)
        return matrix[:, s:max(e, s)]

    known: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def stats(start: int, end: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # each window once: a mean and a share read the same window, and a half-hourly cycle
        # is also an hourly one (the same minutes for several features and horizons)
        s, e = min(max(start, 0), width), min(max(end, 0), width)
        key = (s, max(e, s))
        if key not in known:
            block = matrix[:, key[0]:key[1]]
            valid = ~np.isnan(block)
            filled = np.where(valid, block, 0)
            known[key] = filled.sum(axis=1, dtype=np.float64), valid.sum(axis=1), (filled > 0).sum(axis=1)
        return known[key]

    def mean(start: int, end: int) -> np.ndarray:
        total, count, _ = stats(start, end)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, total / np.maximum(count, 1), np.nan)

    def share(start: int, end: int) -> np.ndarray:
        _, count, nonzero = stats(start, end)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, nonzero / np.maximum(count, 1), np.nan)

    def at(i: int) -> np.ndarray:
        return matrix[:, i].astype(np.float64) if 0 <= i < width else np.full(n, np.nan)

    day_sum, day_count, day_nonzero = stats(t - DAY, t)
    with np.errstate(invalid="ignore", divide="ignore"):
        day_mean = np.where(day_count > 0, day_sum / np.maximum(day_count, 1), np.nan)
        day_share = np.where(day_count > 0, day_nonzero / np.maximum(day_count, 1), np.nan)
    scale = np.maximum(np.nan_to_num(day_mean, nan=0.0), MIN_SCALE)
    per_origin = [at(t - k) / scale for k in LAGS]
    last60 = cols(t - 60, t)
    with np.errstate(all="ignore"):
        peak = np.nanmax(np.where(np.isnan(last60), -np.inf, last60), axis=1) if last60.shape[1] else np.full(n, -np.inf)
    peak = np.where(np.isfinite(peak), peak, np.nan)
    per_origin += [mean(t - 15, t) / scale, mean(t - 60, t) / scale, peak / scale,
                   share(t - 15, t), share(t - 60, t), day_share]
    last = last_nonzero_at_end(matrix)
    since = np.where(last >= 0, t - last, WEEK)
    per_origin += [np.log1p(np.minimum(since, WEEK)), np.log(scale), day_count / DAY]
    base = np.repeat(np.stack(per_origin, axis=1), horizon, axis=0)

    rows = []
    for h in range(horizon):
        target = t + h
        minute_of_day = (start_minute + target) % DAY
        day_of_week = ((start_minute + target) // DAY + 3) % 7
        angle_d = 2 * np.pi * minute_of_day / DAY
        angle_w = 2 * np.pi * day_of_week / 7
        rows.append(np.stack([
            at(target - DAY) / scale,
            mean(target - DAY - 5, target - DAY + 6) / scale,
            share(target - DAY - 5, target - DAY + 6),
            at(target - WEEK) / scale,
            share(target - WEEK - 5, target - WEEK + 6),
            *period_shares(lambda lo, hi: stats(lo, hi)[1:], target, t),
            np.full(n, np.sin(angle_d)), np.full(n, np.cos(angle_d)),
            np.full(n, np.sin(angle_w)), np.full(n, np.cos(angle_w)), np.full(n, float(h)),
        ], axis=1))
    per_row = np.stack(rows, axis=1).reshape(n * horizon, -1)  # origin-major, as build()
    return np.hstack([base, per_row]), scale



LAST_NONZERO_TAILS = (64, 1440)
"""Columns searched, widening, for a series' last request before the whole row is (most
services had one in the last hour or day: no pass over the week for them)."""


def last_nonzero_at_end(matrix: np.ndarray) -> np.ndarray:
    """Per row, the column of its last minute with a request (NaN > 0 is False), -1 if none: the
    last `tail` columns first, widening only for the rows without one there."""
    n, width = matrix.shape
    last = np.full(n, -1, np.int64)
    todo = np.arange(n)
    for tail in (*LAST_NONZERO_TAILS, width):
        tail = min(tail, width)
        if not len(todo) or not tail:
            break
        part = matrix[todo, width - tail:] if len(todo) < n else matrix[:, width - tail:]
        nonzero = part > 0
        at = tail - 1 - np.argmax(nonzero[:, ::-1], axis=1)
        found = nonzero[np.arange(len(todo)), at]
        last[todo[found]] = width - tail + at[found]
        todo = todo[~found]
        if tail == width:
            break
    return last
