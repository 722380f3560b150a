"""The live tick forecasts a fleet a block of series at a time (bounded peak memory): the numbers
must be those of forecasting every series on its own, whatever the block size and whichever
rows are picked."""

from __future__ import annotations

import numpy as np
import pytest
from forecast.forecaster import RateForecaster

from tests.training.test_forecaster import synthetic


@pytest.fixture(scope="module")
def fleet_and_model():
    rng = np.random.default_rng(3)
    X = np.stack([synthetic(days=3, seed=s) * rng.choice([0.2, 1.0, 4.0]) for s in range(9)]).astype(np.float32)
    X[4, -30:] = np.nan  # a recent gap
    X[6, :] = 0.0  # an idle series
    model = RateForecaster(horizon=4, max_iter=15).fit(X.astype(float), start_minute=7)
    return X, model


@pytest.mark.parametrize("block_rows", [1, 2, 4, 100])
def test_block_predict_equals_each_series_forecast_on_its_own(fleet_and_model, block_rows):
    X, model = fleet_and_model
    rows = np.array([0, 1, 2, 4, 5, 6, 8])  # not every row, and not one run of rows
    got = model.predict_blocks(X, rows, start_minute=7, block_rows=block_rows)
    alone = model.predict([row.astype(float) for row in X[rows]], start_minute=7)  # the per-series path
    for field in ("point", "upper", "p_any"):
        np.testing.assert_allclose(getattr(got, field), getattr(alone, field), rtol=1e-9, atol=1e-12)
    assert got.point.shape == (len(rows), 4)


def test_block_predict_of_every_row_equals_the_one_pass_over_the_matrix(fleet_and_model):
    X, model = fleet_and_model
    whole = model.predict_blocks(X, np.arange(len(X)), start_minute=7, block_rows=len(X))
    blocks = model.predict_blocks(X, np.arange(len(X)), start_minute=7, block_rows=2)
    for field in ("point", "upper", "p_any"):
        np.testing.assert_array_equal(getattr(blocks, field), getattr(whole, field))


def test_a_negative_count_in_any_block_is_refused(fleet_and_model):
    X, model = fleet_and_model
    bad = X.copy()
    bad[7, 10] = -1.0
    with pytest.raises(ValueError, match="negative"):
        model.predict_blocks(bad, np.arange(len(bad)), block_rows=3)
