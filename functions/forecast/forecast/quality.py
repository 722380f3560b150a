"""Forecast quality measured online: each service's next-minute forecast, scored once Prometheus
has reported that minute.

Pure bookkeeping (numpy in, numbers out), fed by the tick: `expect` keeps what a tick forecast
for its first horizon minute; `score` compares it, a tick later, with what the history cache then
holds for that minute. A minute is scored once it lies at least `settle_minutes` before the end of
the history read (the tick re-reads the recent past: a late scrape still corrects it), and never
when it is a gap (NaN: Prometheus did not scrape it), so an outage is not scored as idle. The
figures are the same as the backtest's (training/backtest.accuracy): absolute error of the point
forecast, and the Brier score of P(any request), over the last `window_minutes` minutes scored.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Figures:
    mae: float
    """Mean absolute error of the point forecast, in requests per minute."""
    brier: float
    minutes: int
    requests: float
    """Requests actually seen over the scored minutes (ranks services for export)."""


class OnlineQuality:
    def __init__(self, window_minutes: int = 60, settle_minutes: int = 1, keep_minutes: int = 30):
        self.window_minutes = window_minutes
        self.settle_minutes = settle_minutes
        self.keep_minutes = keep_minutes
        self._pending: dict[int, tuple[list[str], np.ndarray, np.ndarray]] = {}
        # (minute, names, |error|, squared error of P(any), actual): one entry per scored minute
        self._rounds: deque[tuple[int, list[str], np.ndarray, np.ndarray, np.ndarray]] = deque()

    def expect(self, minute: int, names: list[str], point: np.ndarray, p_any: np.ndarray) -> None:
        """Remember the forecast for `minute` (point in requests per minute) of each of `names`."""
        self._pending[minute] = (list(names), np.asarray(point, dtype=float), np.asarray(p_any, dtype=float))

    def score(self, start_minute: int, end_minute: int, services: list[str], matrix: np.ndarray) -> int:
        """Score every remembered minute the history [start_minute, end_minute) now settles;
        returns how many (service, minute) pairs were scored."""
        rows = {s: i for i, s in enumerate(services)}
        scored = 0
        for minute in sorted(self._pending):
            if minute >= end_minute - self.settle_minutes:
                break
            names, point, p_any = self._pending.pop(minute)
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
            self._rounds.append((minute, kept, np.abs(point[ok] - a), (p_any[ok] - (a > 0)) ** 2, a))
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
        errors = np.concatenate([r[2] for r in self._rounds])
        squares = np.concatenate([r[3] for r in self._rounds])
        actual = np.concatenate([r[4] for r in self._rounds])
        return Figures(float(errors.mean()), float(squares.mean()), len(errors), float(actual.sum()))

    def per_service(self) -> dict[str, Figures]:
        sums: dict[str, list[float]] = {}
        for _, names, errors, squares, actual in self._rounds:
            for name, e, s, a in zip(names, errors.tolist(), squares.tolist(), actual.tolist()):
                acc = sums.setdefault(name, [0.0, 0.0, 0, 0.0])
                acc[0] += e
                acc[1] += s
                acc[2] += 1
                acc[3] += a
        return {n: Figures(e / k, s / k, k, a) for n, (e, s, k, a) in sums.items()}
