"""The forecaster follows scikit-learn's estimator conventions and never peeks at the future."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from forecast import features
from forecast.forecaster import RateForecaster
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from training.backtest import Trace, walk_forward


def synthetic(days: int = 3, seed: int = 0) -> np.ndarray:
    """A sparse daily pattern: bursts at the same hours every day, idle otherwise."""
    rng = np.random.default_rng(seed)
    minute = np.arange(days * 1440)
    active = ((minute % 1440) // 60) % 6 == 0
    return np.where(active, rng.poisson(3.0, size=len(minute)), 0).astype(float)


def test_estimator_conventions():
    model = RateForecaster(horizon=3, max_iter=10)
    assert model.get_params()["horizon"] == 3
    assert clone(model).get_params() == model.get_params()
    with pytest.raises(NotFittedError):
        model.predict(synthetic(1)[None, :])
    assert model.fit(synthetic()[None, :]) is model
    assert hasattr(model, "point_model_") and model.n_features_in_ == len(model.feature_names_)
    restored = pickle.loads(pickle.dumps(model))
    a, b = model.predict(synthetic()[None, :]), restored.predict(synthetic()[None, :])
    np.testing.assert_array_equal(a.p_any, b.p_any)


def test_forecast_shapes_and_ranges_for_many_services():
    X = np.stack([synthetic(seed=s) for s in range(4)])
    X[2, 100:400] = np.nan  # a gap: no data, not idle
    model = RateForecaster(horizon=5, max_iter=20).fit(X, start_minute=0)
    out = model.predict(X, start_minute=0)
    assert out.point.shape == out.upper.shape == out.p_any.shape == (4, 5)
    assert np.all(out.upper >= out.point) and np.all(out.point >= 0)
    assert np.all((out.p_any >= 0) & (out.p_any <= 1))


def test_it_learns_the_daily_pattern():
    series = synthetic(days=4)
    model = RateForecaster(horizon=2, max_iter=50).fit(series[None, :])
    day4 = 3 * 1440
    busy = np.arange(day4 + 5, day4 + 50)  # inside an active hour
    quiet = np.arange(day4 + 65, day4 + 110)  # an idle hour
    p_busy = model.predict_origins(series, busy).p_any[:, 0].mean()
    p_quiet = model.predict_origins(series, quiet).p_any[:, 0].mean()
    assert p_busy > 0.8 and p_quiet < 0.2


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="negative"):
        RateForecaster().fit(-np.ones((1, 500)))
    with pytest.raises(ValueError, match="history"):
        RateForecaster().fit(np.ones((1, 10)))


def test_no_peeking_forecasts_do_not_change_when_the_future_does():
    series = synthetic(days=3)
    trace = Trace("t", 0, series.copy(), None, np.zeros(len(series) * 60, dtype=bool))
    model = RateForecaster(horizon=3, max_iter=10)
    table, _ = walk_forward(trace, 3, warmup=1440, block=720, forecaster=model)
    changed = series.copy()
    cut = 1440 + 900  # inside the second block
    changed[cut:] = 50.0
    trace2 = Trace("t", 0, changed, None, trace.gap_seconds)
    table2, _ = walk_forward(trace2, 3, warmup=1440, block=720, forecaster=model)
    before = cut - 1440  # rows are origins; origin t uses minutes < t
    np.testing.assert_array_equal(table.p_any[: before + 1], table2.p_any[: before + 1])
    assert not np.array_equal(table.p_any[before + 1:], table2.p_any[before + 1:])


PERIOD_COLUMNS = [features.FEATURE_NAMES.index(f"period_{p}_share") for p in features.PERIODS]
BEST_PERIOD = features.FEATURE_NAMES.index("best_period_share")


def test_feature_rows_do_not_move_when_the_future_changes():
    """Every column, the period shares included: the row of origin t uses minutes < t only."""
    rng = np.random.default_rng(1)
    series = np.where(rng.random(4 * 1440) < 0.2, rng.poisson(2.0, 4 * 1440), 0).astype(float)
    series[::60] += 3  # an hourly job, so that the period shares are not all zero
    origins = np.arange(0, len(series), 37)
    rows = features.build(features.SeriesIndex(series), origins, 5, 0)
    for cut in (100, 1500, 4000):
        changed = series.copy()
        changed[cut:] = rng.integers(0, 30, len(series) - cut)
        moved = features.build(features.SeriesIndex(changed), origins, 5, 0)
        past = np.repeat(origins <= cut, 5)
        np.testing.assert_array_equal(moved[past], rows[past])
        later = np.repeat(origins > cut + 60, 5)  # a whole hourly cycle after the cut
        assert not np.array_equal(moved[later][:, PERIOD_COLUMNS], rows[later][:, PERIOD_COLUMNS])


def test_period_shares_see_an_hourly_job_and_treat_gaps_as_unknown():
    hourly = np.zeros(400)
    hourly[10::60] = 2  # a job at minute 10 of every hour
    k60 = features.FEATURE_NAMES.index("period_60_share")
    k30 = features.FEATURE_NAMES.index("period_30_share")
    rows = features.build(features.SeriesIndex(hourly), np.array([369, 384]), 2, 0)
    # origin 369, h=1: target 370 = 10 + 6 * 60, every past cycle had the job (+-1 minute)
    assert rows[1, k60] == 1.0 and rows[1, BEST_PERIOD] == 1.0
    assert rows[1, k30] == 0.5  # 30 minutes back: off phase; 60: on phase; 90: off; 120: on
    assert rows[2, k60] == 0.0  # origin 384: target 384, off phase
    assert np.isnan(rows[:, features.FEATURE_NAMES.index("period_1440_share")]).all()  # no day yet
    gap = hourly.copy()
    gap[:380] = np.nan  # no data at any past cycle: unknown, not idle
    assert np.isnan(features.build(features.SeriesIndex(gap), np.array([384]), 1, 0)[0, PERIOD_COLUMNS]).all()


@pytest.mark.parametrize("width", [3, 40, 1500, 10080, 11000])
def test_vectorised_features_at_the_end_equal_the_per_series_ones(width):
    """The forecast function's fast path (all services at once) must featurise exactly as the
    per-series path that training and the backtest use: gaps, all-NaN and all-zero rows too."""
    rng = np.random.default_rng(width)
    matrix = rng.poisson(0.7, (6, width)).astype(float)
    matrix[rng.random(matrix.shape) < 0.15] = np.nan
    matrix[0] = np.nan
    matrix[1] = 0.0
    matrix[2, width % 30::30] += 4  # a half-hourly job: the period shares must agree on it too
    fast, scale = features.build_at_end(matrix.astype(np.float32), 5, 28_000_123)
    slow = np.vstack([features.build(features.SeriesIndex(row), np.array([width]), 5, 28_000_123) for row in matrix])
    np.testing.assert_allclose(fast, slow, rtol=1e-9, atol=1e-12)
    assert fast.shape[1] == len(features.FEATURE_NAMES)
    if width > 4 * 30 + 1:
        assert fast[2 * 5:3 * 5, BEST_PERIOD].max() == 1.0  # row 2's job, at some horizon
    np.testing.assert_allclose(scale,
                               [features.scale_at(features.SeriesIndex(r), np.array([width]))[0] for r in matrix])


def test_forecasts_stay_finite_and_bounded_on_series_unlike_the_training_ones():
    # One inf or NaN would make the whole forecast event invalid (the scale function refuses
    # non-finite rates), so every output is finite and no larger than twice the largest
    # relative count seen in training times the series' own scale.
    model = RateForecaster(horizon=3, max_iter=30).fit(synthetic(days=2)[None, :])
    width = 2 * 1440
    odd = np.zeros((4, width))
    odd[0, -3:] = 1e12  # idle for two days, then an enormous spike
    odd[1, :] = 1e9  # a flood every minute
    odd[2, ::97] = 1.0  # a request every 97 minutes
    odd[3, :] = np.nan  # no data at all
    odd[3, -1] = 5.0
    out = model.predict(odd)
    for values in (out.point, out.upper, out.p_any):
        assert np.all(np.isfinite(values))
    _, scale = features.build_at_end(odd, 3, 0)
    assert np.all(out.upper <= model.max_relative_count_ * scale[:, None] * (1 + 1e-9))
