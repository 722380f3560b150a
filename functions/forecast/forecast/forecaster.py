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
from scipy.ndimage import maximum_filter1d
from sklearn.base import BaseEstimator
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.utils.validation import check_is_fitted

from . import calibration, features

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
        calibration: str | None = "stacked",
        calibration_minutes: int = 1440,
        bound_mean: bool = True,
    ):
        self.horizon = horizon
        self.quantile = quantile
        self.max_train_rows = max_train_rows
        self.max_iter = max_iter
        self.random_state = random_state
        self.calibration = calibration
        self.calibration_minutes = calibration_minutes
        self.bound_mean = bound_mean

    def fit(self, X, y=None, *, start_minute: int = 0) -> "RateForecaster":
        series = _as_series(X)
        rng = np.random.default_rng(self.random_state)
        # The calibration's own draws: the held-back minutes decide its strata, and they must not
        # move the rows the models (the classifier, above all) are fitted on.
        cal_rng = np.random.default_rng(self.random_state + 1)
        rows, counts, scales, recent = [], [], [], []
        extra_rows, extra_hits, extra_weights = [], [], []
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
            # The time split of P(any)'s calibration: rows whose target minute lies in the
            # series' most recent minutes are held back from the classifier.
            cut = len(values) - self._held_back(len(values))
            minute = np.repeat(origins, self.horizon) + np.tile(np.arange(self.horizon), len(origins))
            recent.append(minute[keep] >= cut)
            # More held-back rows than the uniform sample gives the recent minutes: a sparse
            # series has few active minutes, and the calibration map needs some of them.
            # Sampled in two strata, each row weighted by the inverse of its stratum's sampling
            # rate: origins within NEAR_MINUTES of a request (where a sparse series' clusters
            # are, and its few hits) and the rest; so the map sees a sparse series' clusters
            # without the sample's share of them biasing it.
            late = np.arange(max(cut, MIN_HISTORY), len(values) - self.horizon + 1)
            if len(late):
                last = index.last_nonzero[late - 1]
                near = (last >= 0) & (late - last <= NEAR_MINUTES)
                for stratum in (late[near], late[~near]):
                    if not len(stratum):
                        continue
                    more = np.sort(cal_rng.choice(stratum, size=min(per_series, len(stratum)), replace=False))
                    hit = features.targets(index, more, self.horizon)
                    ok = ~np.isnan(hit)
                    extra_rows.append(features.build(index, more, self.horizon, start_minute)[ok])
                    extra_hits.append(hit[ok] > 0)
                    extra_weights.append(np.full(int(ok.sum()), len(stratum) / len(more)))
        if not rows or sum(len(r) for r in rows) == 0:
            raise ValueError(f"no series has the {MIN_HISTORY + self.horizon} minutes of history needed to fit")
        Xf, yc, sc = np.vstack(rows), np.concatenate(counts), np.concatenate(scales)
        held = np.concatenate(recent)
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
        extra = (np.vstack(extra_rows), np.concatenate(extra_hits), np.concatenate(extra_weights)) if extra_rows else None
        self._fit_p_any(Xf, yc > 0, held, common, extra)
        self.n_features_in_ = Xf.shape[1]
        self.feature_names_ = list(features.FEATURE_NAMES)
        self.n_train_rows_ = len(yc)
        return self

    def _held_back(self, length: int) -> int:
        """Minutes at the end of a series held back to calibrate P(any): `calibration_minutes`,
        but never more than a quarter of the series (a short one keeps most rows to learn from)."""
        if self.calibration is None:
            return 0
        return min(self.calibration_minutes, max(0, (length - MIN_HISTORY) // 4))

    def _fit_p_any(self, Xf: np.ndarray, any_request: np.ndarray, held: np.ndarray, common: dict,
                   extra: tuple[np.ndarray, np.ndarray, np.ndarray] | None) -> None:
        """The classifier on the older rows, its calibration on the held-back recent ones (a
        time split: the map is learned on rows the classifier never saw, later than all of them)."""
        self.calibrator_ = None
        train = ~held if (~held).any() and any_request[~held].any() and not any_request[~held].all() else np.ones_like(held)
        if any_request[train].all() or not any_request[train].any():
            self.constant_p_any_: float | None = float(any_request.mean())
            self.any_model_ = None
            return
        self.constant_p_any_ = None
        # The older rows may not have a feature the recent ones have (yesterday's minute, on the
        # second day): held at 0 for the classifier, as unseen features are for every model.
        self.any_unseen_features_ = np.isnan(Xf[train]).all(axis=0)
        self.any_model_ = HistGradientBoostingClassifier(**common).fit(self._any_rows(Xf[train]), any_request[train])
        check = held & ~train
        if not check.any():
            return  # no time split was possible (or asked for): the raw score
        rows, hits, weights = Xf[check], any_request[check], None
        if extra is not None:
            # The stratified rows stand for the held-back minutes (weighted); the uniform
            # sample's held-back rows would count them twice.
            rows, hits, weights = extra
            rows[:, self.unseen_features_] = 0.0
        score = self.any_model_.predict_proba(self._any_rows(rows))[:, 1]
        self.calibrator_ = calibration.fit(self.calibration, score, rows, hits, weights)

    def _any_rows(self, Xf: np.ndarray) -> np.ndarray:
        unseen = getattr(self, "any_unseen_features_", None)
        if unseen is None or not unseen.any():
            return Xf
        out = Xf.copy()
        out[:, unseen] = 0.0
        return out

    def predict(self, X, *, start_minute: int = 0) -> Forecast:
        """Forecast the `horizon` minutes that follow the last column of each series. A 2-D
        array (series of equal length, the live tick) is featurised in one vectorised pass;
        a list of series of different lengths one by one. Either way each model predicts once."""
        if isinstance(X, np.ndarray) and X.ndim == 2:
            return self.predict_blocks(X, np.arange(len(X)), start_minute=start_minute)
        series = _as_series(X)
        blocks: list[np.ndarray] = []
        scales: list[np.ndarray] = []
        peaks: list[np.ndarray] = []
        for values in series:
            index = features.SeriesIndex(values)
            origin = np.array([len(values)])
            blocks.append(features.build(index, origin, self.horizon, start_minute))
            scales.append(np.repeat(features.scale_at(index, origin), self.horizon))
            peaks.append(np.repeat(day_peak(values, origin), self.horizon))
        return self._predict_rows(np.vstack(blocks), np.concatenate(scales), (len(series), self.horizon),
                                  np.concatenate(peaks))

    def predict_blocks(self, matrix: np.ndarray, rows: np.ndarray, *, start_minute: int = 0,
                       block_rows: int | None = None) -> Forecast:
        """`predict` for the series `matrix[rows]` (equal length, the live tick), `block_rows` series
        at a time: the features, their float64 copies and the models' inputs of a block are all
        that is held at once, so the peak memory is bounded by the block, not by the fleet (10,000
        services at once were ~0.8 GiB). Every row's forecast depends on its own series only, so
        the numbers are those of one pass. `rows` in increasing order are read as slices where
        they run consecutively (no copy of the matrix)."""
        check_is_fitted(self, "point_model_")
        block_rows = block_rows or PREDICT_BLOCK_ROWS
        rows = np.asarray(rows, dtype=np.int64)
        parts = []
        for a in range(0, len(rows), block_rows):
            pick = rows[a:a + block_rows]
            consecutive = len(pick) and pick[-1] - pick[0] == len(pick) - 1 and np.all(np.diff(pick) == 1)
            X = matrix[pick[0]:pick[-1] + 1] if consecutive else matrix[pick]
            if np.any(X < 0):
                raise ValueError("request counts cannot be negative")
            Xf, scale = features.build_at_end(X, self.horizon, start_minute)
            peak = day_peak_at_end(X)
            parts.append(self._predict_rows(Xf, np.repeat(scale, self.horizon), (len(X), self.horizon),
                                            np.repeat(peak, self.horizon)))
            del Xf, X
        if not parts:
            empty = np.zeros((0, self.horizon))
            return Forecast(empty, empty.copy(), empty.copy())
        return Forecast(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("point", "upper", "p_any")))

    def predict_origins(self, values: np.ndarray, origins: np.ndarray, start_minute: int = 0) -> Forecast:
        """Forecasts from many origins of one series at once (the backtest's walk-forward day):
        the row for origin t uses minutes < t only."""
        index = features.SeriesIndex(np.asarray(values, dtype=float))
        origins = np.asarray(origins)
        Xf = features.build(index, origins, self.horizon, start_minute)
        scale = np.repeat(features.scale_at(index, origins), self.horizon)
        peak = np.repeat(day_peak(index.counts, origins), self.horizon)
        return self._predict_rows(Xf, scale, (len(origins), self.horizon), peak)

    def _predict_rows(self, Xf: np.ndarray, scale: np.ndarray, shape: tuple[int, int],
                      peak: np.ndarray | None = None) -> Forecast:
        check_is_fitted(self, "point_model_")
        Xf[:, self.unseen_features_] = 0.0
        ceiling = self.max_relative_count_
        with np.errstate(over="ignore"):
            relative_point = self.point_model_.predict(Xf)
        relative_point = np.clip(np.nan_to_num(relative_point, nan=0.0, posinf=ceiling), 0, ceiling)
        relative_upper = np.clip(np.nan_to_num(self.upper_model_.predict(Xf), nan=0.0, posinf=ceiling), 0, ceiling)
        bound = getattr(self, "bound_mean", False)  # an artifact published before the bound has none
        if bound:
            relative_point = np.minimum(relative_point, mean_bound(Xf, relative_upper))
        point = relative_point * scale
        upper = np.maximum(relative_upper * scale, point)
        if bound and peak is not None:
            # The hard bound (no model is trusted beyond it): twice the busiest minute the series
            # had in its last day, or one request. On the ServeGen fleet, walk-forward, 0.03% of
            # the busy tenants' minutes had an upper above it.
            cap = np.maximum(PEAK_FACTOR * peak, 1.0)
            point, upper = np.minimum(point, cap), np.minimum(upper, cap)
        if self.any_model_ is None:
            p_any = np.full(len(Xf), self.constant_p_any_)
        else:
            p_any = self.any_model_.predict_proba(self._any_rows(Xf))[:, 1]
            calibrator = getattr(self, "calibrator_", None)  # None in an artifact published before calibration
            if calibrator is not None:
                p_any = calibrator(p_any, Xf)
        return Forecast(point.reshape(shape), upper.reshape(shape), p_any.reshape(shape))


PREDICT_BLOCK_ROWS = 1000
"""Series per predict pass at the live tick: 1,000 series x a week of float32 is 40 MB, and their
feature rows and the trees' float64 inputs a few MB more."""
RECENT = [features.FEATURE_NAMES.index(name) for name in ("lag_1", "mean_15")]
PEAK_FACTOR = 2.0
NEAR_MINUTES = 15
"""Held-back origins at most this many minutes after a request form their own calibration stratum."""


def day_peak(values: np.ndarray, origins: np.ndarray) -> np.ndarray:
    """The largest count in [t - DAY, t) for each origin t (no data: 0). A running maximum over
    the series once (O(len)), then one lookup per origin."""
    filled = np.nan_to_num(np.asarray(values, dtype=float))
    if len(filled) == 0:
        return np.zeros(len(origins))
    ending = maximum_filter1d(filled, size=features.DAY, origin=(features.DAY - 1) // 2, mode="constant", cval=0.0)
    t = np.asarray(origins, dtype=np.int64)
    return np.where(t > 0, ending[np.clip(t - 1, 0, len(filled) - 1)], 0.0)


def day_peak_at_end(matrix: np.ndarray) -> np.ndarray:
    """`day_peak` at the end of every row of a matrix (the live tick's one origin per series)."""
    last = np.asarray(matrix[:, max(0, matrix.shape[1] - features.DAY):])
    if last.shape[1] == 0:
        return np.zeros(len(matrix))
    return np.nan_to_num(np.nanmax(np.where(np.isnan(last), 0, last), axis=1).astype(np.float64))


def mean_bound(Xf: np.ndarray, relative_upper: np.ndarray) -> np.ndarray:
    """The most the mean forecast may say, in the series' relative units: its own upper quantile
    or its recent level (the last minute, the mean of the last 15), whichever is larger.

    Why the mean ran away: it is fitted, under Poisson loss, to counts divided by each series'
    last-day mean (floored at one request a minute), and those relative counts are heavy-tailed:
    a series idle for a day (scale at the floor) that starts a burst of thousands a minute gives
    rows with relative counts in the thousands. A mean is pulled up by such rare rows where a
    quantile is not; the leaves that hold them also hold rows of a *busy* series in a quiet
    spell (no request for minutes, a large last-day mean), and thousands times a large scale is
    millions: on the ServeGen fleet, walk-forward, 13% of the busy tenants' minutes had a mean
    over twice the actual (7.3 million a minute for a tenant whose last minute was 0), while the
    0.9 quantile's median error was ~10%. Since upper = max(upper, point), the run-away came back
    as the upper and sized pods up to max-scale.

    A mean above both the series' 0.9 quantile and its current level is such a leaf, not
    evidence; bounding it there keeps the upper the quantile model's own (or the recent level).
    On a sparse series in a quiet spell both are 0 and so is the mean: the count's median, which
    is what the absolute error rewards; P(any) carries the chance of a request."""
    recent = np.nan_to_num(Xf[:, RECENT], nan=0.0).max(axis=1)
    return np.maximum(relative_upper, recent)


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
