"""The tick's trees predict through their binned path (forecaster._trees): the numbers must be
exactly the models' own `predict` / `predict_proba`, at the split thresholds themselves, on
gaps and on values beyond anything seen in training."""

from __future__ import annotations

import numpy as np
import pytest

from forecast import features, forecaster
from forecast.forecaster import RateForecaster, _trees
from tests.training.test_forecaster import synthetic


@pytest.fixture(scope="module")
def fleet_and_model():
    rng = np.random.default_rng(11)
    X = np.stack([synthetic(days=3, seed=s) * rng.choice([0.1, 1.0, 6.0]) for s in range(8)]).astype(np.float32)
    X[3, -40:] = np.nan
    X[5, :] = 0.0
    X[6, rng.random(X.shape[1]) < 0.3] = np.nan
    return X, RateForecaster(horizon=3, max_iter=20).fit(X.astype(float), start_minute=7)


def rows_at_the_thresholds(model, n: int = 400) -> np.ndarray:
    """Feature rows whose values are the split thresholds themselves, their neighbours, NaN,
    and +-inf: where a bin and a float comparison could disagree if they were not the same."""
    rng = np.random.default_rng(0)
    thresholds = model.point_model_._bin_mapper.bin_thresholds_
    columns = []
    for edges in thresholds:
        pool = np.concatenate([edges, np.nextafter(edges, np.inf), np.nextafter(edges, -np.inf),
                               [np.nan, np.inf, -np.inf, 0.0, -1e300, 1e300]])
        columns.append(rng.choice(pool, n))
    return np.stack(columns, axis=1)


def test_binned_trees_equal_the_models_own_predictions(fleet_and_model):
    _, model = fleet_and_model
    Xf = rows_at_the_thresholds(model)
    for tree_model in (model.point_model_, model.upper_model_):
        np.testing.assert_array_equal(_trees(tree_model, Xf), tree_model.predict(Xf))
    assert model.any_model_ is not None
    rows = model._any_rows(Xf)
    np.testing.assert_array_equal(_trees(model.any_model_, rows, proba=True), model.any_model_.predict_proba(rows)[:, 1])


def test_the_tick_s_forecasts_are_those_of_the_models_own_predict(fleet_and_model, monkeypatch):
    X, model = fleet_and_model
    rows = np.arange(len(X))
    binned = model.predict_blocks(X, rows, start_minute=7, block_rows=3)
    monkeypatch.setattr(forecaster, "BINNED_TREES", False)
    own = model.predict_blocks(X, rows, start_minute=7, block_rows=3)
    for field in ("point", "upper", "p_any"):
        np.testing.assert_array_equal(getattr(binned, field), getattr(own, field))
    assert features.FEATURE_NAMES and np.isfinite(binned.point).all()
