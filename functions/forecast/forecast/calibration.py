"""Calibration of P(any request) on held-back recent minutes (a time split). Pure numpy/sklearn.

Why: the classifier is fitted on rows from every series' past, where the rare active minutes of
a sparse series are few; on the per-model Alibaba fleet it said P > 0.5 on thousands of
service-minutes of which 13% had a request, and scored a Brier worse than each series' own
base rate. The map from its score to a probability is therefore learned on rows it was not
fitted on, from the most recent minutes of every series (the walk-forward future is more like
the recent past than like the average past), and in the default ("stacked") form it is a
logistic regression over the score *and* the series' own recent activity shares (the base rate
over the last day, hour and quarter hour, which the features already carry): where the
classifier is not better than a series' own base rate, the fitted weights lean on the base rate.
"isotonic" and "sigmoid" are the two textbook maps over the score alone (for comparison).

The stacked map also reads how long before the target minute the series' last request was, in
buckets (RECENCY_EDGES): a level per bucket and slopes on the score and the day's share. Why: requests to a sparse
series come in clusters, and the score alone mixed them up. On the per-model Alibaba fleet,
walk-forward, in the series with under one active minute in 500, the minute right after a request
had a request 34% of the time where P(any) said 5%, and minutes 4-15 after one 1.4% where it said
3.5%: one map over the score cannot be right in both. Per recency bucket it can (the same fleet,
in the fleet backtest, refitted before every scored day: the median model's Brier skill against
its own walk-forward base rate is +0.03 without the buckets and +0.10 with them; pooled over the
fleet, +0.18 and +0.22).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from . import features

METHODS = ("stacked", "sigmoid", "isotonic")
MIN_ROWS = 200  # fewer held-back rows (or no row of either class): no calibration, the raw score
EPS = 1e-4
SHARES = [features.FEATURE_NAMES.index(name) for name in ("nonzero_day", "nonzero_60", "nonzero_15")]
SINCE = features.FEATURE_NAMES.index("log_minutes_since_request")
HORIZON = features.FEATURE_NAMES.index("horizon")
RECENCY_EDGES = (1, 2, 4, 16, 61, 1441)
"""Buckets of minutes from the last request to the target minute: the next minute, the next few,
the quarter hour, the hour, the day, longer (or never)."""


@dataclass(frozen=True)
class Calibrator:
    method: str
    model: Any
    """A fitted scikit-learn estimator (untyped library)."""
    recency: bool = False
    """Whether the stacked map reads the recency buckets (False in a map published before them)."""

    def __call__(self, score: np.ndarray, rows: np.ndarray) -> np.ndarray:
        if self.method == "isotonic":
            return np.clip(self.model.predict(score), 0.0, 1.0)
        return self.model.predict_proba(_inputs(self.method, score, rows, self.recency))[:, 1]


def fit(method: str | None, score: np.ndarray, rows: np.ndarray, hit: np.ndarray,
        weight: np.ndarray | None = None) -> Calibrator | None:
    """The map from the classifier's `score` on held-back `rows` to P(any), fitted on what
    happened (`hit`), each row counted `weight` times (a stratified sample: the inverse of its
    sampling rate; None: once); None (keep the raw score) when the method is None or the rows
    cannot calibrate (too few, or one class only)."""
    if method is None:
        return None
    if method not in METHODS:
        raise ValueError(f"calibration must be one of {METHODS} or None, not {method!r}")
    hit = np.asarray(hit, dtype=bool)
    if len(hit) < MIN_ROWS or hit.all() or not hit.any():
        return None
    if weight is not None:
        weight = np.asarray(weight, dtype=float) / np.mean(weight)
    if method == "isotonic":
        return Calibrator(method, IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(score, hit, sample_weight=weight))
    recency = method == "stacked"
    model = LogisticRegression(C=10.0, max_iter=1000).fit(_inputs(method, score, rows, recency), hit, sample_weight=weight)
    return Calibrator(method, model, recency)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1.0 - EPS)
    return np.log(p / (1.0 - p))


def recency_buckets(rows: np.ndarray) -> np.ndarray:
    """One-hot (n, len(RECENCY_EDGES)) of the minutes from the series' last request to each
    row's target minute (features: minutes since the request at the origin, plus the horizon)."""
    since = np.expm1(np.nan_to_num(rows[:, SINCE], nan=np.log1p(features.WEEK)))
    gap = np.rint(since) + np.nan_to_num(rows[:, HORIZON], nan=0.0)
    which = np.clip(np.searchsorted(RECENCY_EDGES, gap, side="right") - 1, 0, len(RECENCY_EDGES) - 1)
    return (which[:, None] == np.arange(len(RECENCY_EDGES))[None, :]).astype(float)


def _inputs(method: str, score: np.ndarray, rows: np.ndarray, recency: bool = False) -> np.ndarray:
    z = _logit(np.asarray(score, dtype=float))
    if method == "sigmoid":
        return z[:, None]
    # A share the history cannot give yet (no data in the window) says nothing beyond the score.
    shares = [_logit(np.where(np.isnan(rows[:, k]), score, rows[:, k])) for k in SHARES]
    stacked = np.stack([z, *shares], axis=1)
    if not recency:
        return stacked
    # Per bucket its own level and its own slopes on the score and on the day's share: how much
    # a series' usual sparsity says depends on how recent its last request is.
    buckets = recency_buckets(rows)
    return np.hstack([stacked, buckets, buckets * z[:, None], buckets * shares[0][:, None]])
