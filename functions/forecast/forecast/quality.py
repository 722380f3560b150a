"""Forecast quality measured online: each service's next-minute forecast, scored once Prometheus
has reported that minute.

Pure bookkeeping (numpy in, numbers out), fed by the tick: `expect` keeps what a tick forecast
for its first horizon minute; `score` compares it, a tick later, with what the history cache then
holds for that minute. A minute is scored once it lies at least `settle_minutes` before the end of
the history read (the tick re-reads the recent past: a late scrape still corrects it), and never
when it is a gap (NaN: Prometheus did not scrape it), so an outage is not scored as idle. The
figures are the same as the backtest's (training/backtest.accuracy, training/skill.py): absolute
error of the point forecast, and the Brier score of P(any request), over the last `window_minutes`
minutes scored; each beside the same figure of a baseline that needs no model, so that an operator
sees whether the forecast helps a service at all: the seasonal naive point (`baselines`: the same
minute yesterday or the mean of the last 5 minutes, whichever is larger) and the service's own base
rate of minutes with a request over the history read. MASE = MAE / the naive's MAE (< 1: the
forecast helps); Brier skill = 1 - Brier / the base rate's Brier (> 0: P(any) helps).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np


def mase(mae: float, mae_naive: float) -> float:
    """MAE over the seasonal naive's MAE on the same minutes (< 1: the forecast helps; NaN when
    the naive is perfect). The one formula the backtests and the function's gauges share."""
    return mae / mae_naive if mae_naive > 0 else float("nan")


def brier_skill(brier: float, brier_base_rate: float) -> float:
    """1 - Brier / the base rate's Brier (> 0: P(any) helps; NaN when the base rate is perfect)."""
    return 1.0 - brier / brier_base_rate if brier_base_rate > 0 else float("nan")


DAY = 1440
RECENT = 5


def baselines(matrix: np.ndarray, target_column: int, seen: np.ndarray | None = None,
              active: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per row of the history `matrix` (services x minutes, NaN: no data), the seasonal naive
    forecast of the minute at `target_column` (the same minute a day before, or the mean of the
    last RECENT minutes, whichever is larger; no data counts as 0, as in the backtest's
    seasonal naive) and the row's base rate (share of its minutes with data that had a request).
    Reads the matrix a day of columns at a time: 10,000 services x a week stay one float32 copy.
    `seen` and `active` (per row: minutes with data, minutes with a request) when the caller has
    already counted them (`row_counts`): the same numbers, without another pass over the matrix."""
    n, width = matrix.shape
    recent = np.nan_to_num(np.asarray(matrix[:, max(0, width - RECENT):width], dtype=np.float64))
    recent_mean = recent.mean(axis=1) if recent.shape[1] else np.zeros(n)
    day_ago = target_column - DAY
    yesterday = np.nan_to_num(np.asarray(matrix[:, day_ago], dtype=np.float64)) if 0 <= day_ago < width else np.zeros(n)
    if seen is None or active is None:
        seen, active, _, _ = row_counts(matrix)
    return np.maximum(yesterday, recent_mean), np.where(seen > 0, active / np.maximum(seen, 1), 0.0)


ROW_BLOCK = 1000
"""Rows per pass in `row_counts`: a boolean copy of a 10,000-service week is 100 MB, a block 10 MB."""


def row_counts(matrix: np.ndarray, recent: int = 60) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per row, in one pass over the matrix (a block of rows at a time): the minutes with data,
    the minutes with a request (NaN > 0 is False), the column of the last minute with data (-1:
    none), and the minutes without data among the last `recent`. What the tick's reply, its
    staleness check and the quality baselines each read: one pass instead of three."""
    n, width = matrix.shape
    seen = np.zeros(n, np.int64)
    active = np.zeros(n, np.int64)
    last = np.full(n, -1, np.int64)
    gaps = np.zeros(n, np.int64)
    for a in range(0, n, ROW_BLOCK):
        block = matrix[a:a + ROW_BLOCK]
        missing = np.isnan(block)
        seen[a:a + ROW_BLOCK] = width - np.count_nonzero(missing, axis=1)
        active[a:a + ROW_BLOCK] = np.count_nonzero(block > 0, axis=1)
        last[a:a + ROW_BLOCK] = last_true(~missing[:, width - min(TAIL, width):], width) if width else -1
        rest = np.flatnonzero((last[a:a + ROW_BLOCK] < 0) & (seen[a:a + ROW_BLOCK] > 0))
        if len(rest):  # no data in the last TAIL minutes: look further back, these rows only
            last[a + rest] = last_true(~missing[rest], width)
        gaps[a:a + ROW_BLOCK] = np.count_nonzero(missing[:, width - min(recent, width):], axis=1)
    return seen, active, last, gaps


TAIL = 64
"""Columns `row_counts` searches first for a row's last minute with data (most rows have one)."""


def last_true(flags: np.ndarray, width: int) -> np.ndarray:
    """Per row of the boolean `flags` (the last flags.shape[1] columns of a `width`-column
    matrix), the column of its last True in the whole matrix's numbering; -1 where none."""
    if not flags.shape[1]:
        return np.full(len(flags), -1, np.int64)
    at = flags.shape[1] - 1 - np.argmax(flags[:, ::-1], axis=1)
    return np.where(flags[np.arange(len(flags)), at], width - flags.shape[1] + at, -1)


@dataclass(frozen=True)
class Figures:
    mae: float
    """Mean absolute error of the point forecast, in requests per minute."""
    brier: float
    minutes: int
    requests: float
    """Requests actually seen over the scored minutes (ranks services for export)."""
    mae_naive: float = float("nan")
    """The seasonal naive forecast's MAE on the same minutes (NaN: no baseline was given)."""
    brier_base_rate: float = float("nan")
    """The Brier score of the service's own base rate on the same minutes."""

    @property
    def mase(self) -> float:
        return mase(self.mae, self.mae_naive)

    @property
    def brier_skill(self) -> float:
        return brier_skill(self.brier, self.brier_base_rate)


class OnlineQuality:
    def __init__(self, window_minutes: int = 60, settle_minutes: int = 1, keep_minutes: int = 30):
        self.window_minutes = window_minutes
        self.settle_minutes = settle_minutes
        self.keep_minutes = keep_minutes
        self._pending: dict[int, tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
        # (minute, names, |error|, squared error of P(any), actual, |naive error|, squared error
        # of the base rate): one entry per scored minute
        self._rounds: deque[tuple] = deque()

    def expect(self, minute: int, names: list[str], point: np.ndarray, p_any: np.ndarray,
               naive: np.ndarray | None = None, base_rate: np.ndarray | None = None) -> None:
        """Remember the forecast for `minute` (point in requests per minute) of each of `names`,
        and the baselines' (`baselines`) when given (NaN figures otherwise)."""
        nan = np.full(len(names), np.nan)
        self._pending[minute] = (list(names), np.asarray(point, dtype=float), np.asarray(p_any, dtype=float),
                                 nan if naive is None else np.asarray(naive, dtype=float),
                                 nan if base_rate is None else np.asarray(base_rate, dtype=float))

    def score(self, start_minute: int, end_minute: int, services: list[str], matrix: np.ndarray) -> int:
        """Score every remembered minute the history [start_minute, end_minute) now settles;
        returns how many (service, minute) pairs were scored."""
        rows = {s: i for i, s in enumerate(services)}
        scored = 0
        for minute in sorted(self._pending):
            if minute >= end_minute - self.settle_minutes:
                break
            names, point, p_any, naive, base_rate = self._pending.pop(minute)
            column = minute - start_minute
            if not 0 <= column < matrix.shape[1]:
                continue
            index = np.array([rows.get(n, -1) for n in names], dtype=np.int64)
            known = index >= 0
            actual = np.full(len(names), np.nan)
            actual[known] = matrix[index[known], column]
            ok = ~np.isnan(actual)
            if not ok.any():
                continue
            kept = [n for n, k in zip(names, ok) if k]
            a = actual[ok]
            hit = a > 0
            self._rounds.append((minute, kept, np.abs(point[ok] - a), (p_any[ok] - hit) ** 2, a,
                                 np.abs(naive[ok] - a), (base_rate[ok] - hit) ** 2))
            scored += int(ok.sum())
        for minute in [m for m in self._pending if m < end_minute - self.keep_minutes]:
            del self._pending[minute]  # never settled (a long gap): dropped unscored
        if self._rounds:
            newest = self._rounds[-1][0]
            while self._rounds and self._rounds[0][0] <= newest - self.window_minutes:
                self._rounds.popleft()
        return scored

    def fleet(self) -> Figures | None:
        if not self._rounds:
            return None
        cols = [np.concatenate([r[k] for r in self._rounds]) for k in range(2, 7)]
        errors, squares, actual, naive, base = cols
        return Figures(float(errors.mean()), float(squares.mean()), len(errors), float(actual.sum()),
                       _mean(naive), _mean(base))

    def per_service(self) -> dict[str, Figures]:
        """Each service's figures over the window. Summed with `np.bincount`, which adds its
        weights one after the other in input order, the order a Python loop over the rounds
        adds them: the same floats, without a Python step per (service, minute) (a 60-minute
        window of 10,000 services is 600,000 of them, every tick)."""
        if not self._rounds:
            return {}
        index: dict[str, int] = {}
        ids = np.fromiter((index.setdefault(n, len(index)) for r in self._rounds for n in r[1]), dtype=np.int64)
        sums = [np.bincount(ids, weights=np.concatenate([r[k] for r in self._rounds]).astype(np.float64),
                            minlength=len(index)).tolist() for k in range(2, 7)]
        counts = np.bincount(ids, minlength=len(index)).tolist()
        return {n: Figures(e / k, s / k, k, a, nv / k, b / k)
                for n, e, s, a, nv, b, k in zip(index, *sums, counts)}


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else float("nan")
