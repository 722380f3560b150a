"""The request-rate forecaster: one global scikit-learn model over many services' minute counts.

Follows scikit-learn's estimator conventions (keyword-only __init__ without logic, `fit` returns
self, learned attributes end in `_`, `predict` starts with `check_is_fitted`, `get_params` /
`clone` / pickle work). Its input is not sklearn's (n_samples, n_features) table but a batch of
series, `X` of shape (n_services, n_minutes) with NaN for minutes without data, plus the epoch
minute of the first column; so `check_estimator`, which feeds random tables, does not apply.

For each service and each of the next `horizon` minutes it predicts the expected count, an upper
quantile of the count, and P(at least one request): three gradient-boosted models over the
features of features.py, trained on (origin, horizon) rows sampled from every service's past.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.utils.validation import check_is_fitted

from . import features

MIN_HISTORY = 10  # features fall back to NaN where history is shorter than their window


@dataclass(frozen=True)
class Forecast:
    """Arrays of shape (n_origins, horizon): requests per minute and P(any request)."""

    point: np.ndarray
    upper: np.ndarray
    p_any: np.ndarray


class RateForecaster(BaseEstimator):
    def __init__(
        self,
        *,
        horizon: int = 5,
        quantile: float = 0.9,
        max_train_rows: int = 60_000,
        max_iter: int = 80,
        random_state: int = 0,
    ):
        self.horizon = horizon
        self.quantile = quantile
        self.max_train_rows = max_train_rows
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, X, y=None, *, start_minute: int = 0) -> "RateForecaster":
        series = _as_series(X)
        rng = np.random.default_rng(self.random_state)
        rows, counts, scales = [], [], []
        per_series = max(1, self.max_train_rows // (self.horizon * len(series)))
        for values in series:
            index = features.SeriesIndex(values)
            candidates = np.arange(MIN_HISTORY, len(values) - self.horizon + 1)
            if len(candidates) == 0:
                continue
            origins = np.sort(rng.choice(candidates, size=min(per_series, len(candidates)), replace=False))
            target = features.targets(index, origins, self.horizon)
            keep = ~np.isnan(target)
            rows.append(features.build(index, origins, self.horizon, start_minute)[keep])
            counts.append(target[keep])
            scales.append(np.repeat(features.scale_at(index, origins), self.horizon)[keep])
        if not rows or sum(len(r) for r in rows) == 0:
            raise ValueError(f"no series has the {MIN_HISTORY + self.horizon} minutes of history needed to fit")
        Xf, yc, sc = np.vstack(rows), np.concatenate(counts), np.concatenate(scales)
        # A feature the history cannot have yet (last week's minute, in the first week) is all
        # NaN: the trees cannot bin it, so it is held at 0 in fit and predict alike until it exists.
        self.unseen_features_ = np.isnan(Xf).all(axis=0)
        Xf[:, self.unseen_features_] = 0.0
        # Poisson boosting predicts exp(raw): on a series unlike anything in training the raw
        # score can overflow to inf, and one inf would make the whole forecast event invalid.
        # No forecast may exceed twice the largest relative count the model was trained on.
        self.max_relative_count_ = 2.0 * float(max(np.max(yc / sc), 1.0))
        common = dict(max_iter=self.max_iter, random_state=self.random_state, early_stopping=False)
        self.point_model_ = HistGradientBoostingRegressor(loss="poisson", **common).fit(Xf, yc / sc)
        self.upper_model_ = HistGradientBoostingRegressor(loss="quantile", quantile=self.quantile, **common).fit(Xf, yc / sc)
        any_request = yc > 0
        if any_request.all() or not any_request.any():
            self.constant_p_any_ = float(any_request.mean())
            self.any_model_ = None
        else:
            self.constant_p_any_ = None
            self.any_model_ = HistGradientBoostingClassifier(**common).fit(Xf, any_request)
        self.n_features_in_ = Xf.shape[1]
        self.feature_names_ = list(features.FEATURE_NAMES)
        self.n_train_rows_ = len(yc)
        return self

    def predict(self, X, *, start_minute: int = 0) -> Forecast:
        """Forecast the `horizon` minutes that follow the last column of each series. A 2-D
        array (series of equal length, the live tick) is featurised in one vectorised pass;
        a list of series of different lengths one by one. Either way each model predicts once."""
        if isinstance(X, np.ndarray) and X.ndim == 2:
            if np.any(X < 0):
                raise ValueError("request counts cannot be negative")
            rows, scale = features.build_at_end(X, self.horizon, start_minute)
            return self._predict_rows(rows, np.repeat(scale, self.horizon), (len(X), self.horizon))
        series = _as_series(X)
        rows, scales = [], []
        for values in series:
            index = features.SeriesIndex(values)
            origin = np.array([len(values)])
            rows.append(features.build(index, origin, self.horizon, start_minute))
            scales.append(np.repeat(features.scale_at(index, origin), self.horizon))
        return self._predict_rows(np.vstack(rows), np.concatenate(scales), (len(series), self.horizon))

    def predict_origins(self, values: np.ndarray, origins: np.ndarray, start_minute: int = 0) -> Forecast:
        """Forecasts from many origins of one series at once (the backtest's walk-forward day):
        the row for origin t uses minutes < t only."""
        index = features.SeriesIndex(np.asarray(values, dtype=float))
        origins = np.asarray(origins)
        Xf = features.build(index, origins, self.horizon, start_minute)
        scale = np.repeat(features.scale_at(index, origins), self.horizon)
        return self._predict_rows(Xf, scale, (len(origins), self.horizon))

    def _predict_rows(self, Xf: np.ndarray, scale: np.ndarray, shape: tuple[int, int]) -> Forecast:
        check_is_fitted(self, "point_model_")
        Xf[:, self.unseen_features_] = 0.0
        ceiling = self.max_relative_count_
        with np.errstate(over="ignore"):
            relative_point = self.point_model_.predict(Xf)
        point = np.clip(np.nan_to_num(relative_point, nan=0.0, posinf=ceiling), 0, ceiling) * scale
        relative_upper = np.clip(np.nan_to_num(self.upper_model_.predict(Xf), nan=0.0, posinf=ceiling), 0, ceiling)
        upper = np.maximum(relative_upper * scale, point)
        if self.any_model_ is None:
            p_any = np.full(len(Xf), self.constant_p_any_)
        else:
            p_any = self.any_model_.predict_proba(Xf)[:, 1]
        return Forecast(point.reshape(shape), upper.reshape(shape), p_any.reshape(shape))


def _as_series(X) -> list[np.ndarray]:
    if isinstance(X, np.ndarray) and X.ndim == 1:
        X = X[None, :]
    series = [np.asarray(row, dtype=float) for row in X]
    if not series:
        raise ValueError("X holds no series")
    for row in series:
        if row.ndim != 1:
            raise ValueError("each series must be one-dimensional (minutes)")
        if np.any(row[~np.isnan(row)] < 0):
            raise ValueError("request counts cannot be negative")
    return series
