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


@dataclass(frozen=True)
class Calibrator:
    method: str
    model: Any
    """A fitted scikit-learn estimator (untyped library)."""

    def __call__(self, score: np.ndarray, rows: np.ndarray) -> np.ndarray:
        if self.method == "isotonic":
            return np.clip(self.model.predict(score), 0.0, 1.0)
        return self.model.predict_proba(_inputs(self.method, score, rows))[:, 1]


def fit(method: str | None, score: np.ndarray, rows: np.ndarray, hit: np.ndarray) -> Calibrator | None:
    """The map from the classifier's `score` on held-back `rows` to P(any), fitted on what
    happened (`hit`); None (keep the raw score) when the method is None or the rows cannot
    calibrate (too few, or one class only)."""
    if method is None:
        return None
    if method not in METHODS:
        raise ValueError(f"calibration must be one of {METHODS} or None, not {method!r}")
    hit = np.asarray(hit, dtype=bool)
    if len(hit) < MIN_ROWS or hit.all() or not hit.any():
        return None
    if method == "isotonic":
        return Calibrator(method, IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(score, hit))
    model = LogisticRegression(C=10.0, max_iter=500).fit(_inputs(method, score, rows), hit)
    return Calibrator(method, model)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1.0 - EPS)
    return np.log(p / (1.0 - p))


def _inputs(method: str, score: np.ndarray, rows: np.ndarray) -> np.ndarray:
    z = _logit(np.asarray(score, dtype=float))
    if method == "sigmoid":
        return z[:, None]
    # A share the history cannot give yet (no data in the window) says nothing beyond the score.
    shares = [_logit(np.where(np.isnan(rows[:, k]), score, rows[:, k])) for k in SHARES]
    return np.stack([z, *shares], axis=1)
