"""An off-the-shelf forecaster as a baseline for the backtest (never in the product):
statsforecast's AutoETS, walk-forward, with a Poisson count model around its mean.

Per block (the backtest's refit cadence) AutoETS picks and fits an exponential-smoothing model on
the last FIT_DAYS days before the block (minutes with no data count as idle); the fitted model is
then run forward over the block without refitting (`forward(..., fitted=True)`: its one-step-ahead
value at minute m uses minutes < m only). Minute-level seasonality (1,440 minutes a day) is beyond
what ETS fits (its seasonal states are one per season step), so the model is non-seasonal: the
seasonal naive is the seasonal baseline. The h-step forecasts of a non-seasonal ETS are its next
level (trend, when AutoETS picks one, ignored over 1-4 minutes). P(any) and the 0.9 upper quantile
come from a Poisson count at the forecast mean: the same shape our policy assumes within a minute.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import poisson

from training.controllers import ForecastTable

DAY = 1440
FIT_DAYS = 3


def ets_table(counts: np.ndarray, warmup: int, block: int, horizon: int, quantile: float = 0.9) -> ForecastTable:
    from statsforecast.models import AutoETS  # the backtest's extra (requirements-dev.txt), not the product's

    filled = np.nan_to_num(np.asarray(counts, dtype=float))
    n = len(filled)
    mean = np.zeros(n - warmup)
    for start in range(warmup, n, block):
        end = min(n, start + block)
        history = filled[max(0, start - FIT_DAYS * DAY):start]
        model = AutoETS(season_length=1)
        model.fit(history)
        ahead = model.forward(y=filled[max(0, start - FIT_DAYS * DAY):end], h=1, fitted=True)["fitted"]
        mean[start - warmup:end - warmup] = ahead[-(end - start):]
    mean = np.clip(np.nan_to_num(mean, nan=0.0), 0.0, None)
    point = np.repeat(mean[:, None], horizon, axis=1)
    upper = np.maximum(poisson.ppf(quantile, point), point)
    p_any = 1.0 - np.exp(-point)
    return ForecastTable(warmup, point, upper, p_any)
