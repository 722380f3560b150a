"""The pure pieces the scale function adds around placement.place: the placement input (the hour's
mean of next-minute forecasts, as the fleet backtest's Placer computes it), the pool's summed
forecast, and the route step that allows a move only onto a ready, settled route."""

from __future__ import annotations

import math

import numpy as np

from scale.min_scale_policy import MinuteForecast
from scale.placement import (DEDICATED, MOVE, POOL, PREPARE, SETTLING, STAY, WAIT_SETTLE, expected_rate,
                             pooled_forecast, route_step)


def test_expected_rate_is_the_mean_of_the_last_hour_of_next_minute_forecasts():
    samples = [(t * 60.0, float(t % 7)) for t in range(200)]  # point forecasts in req/s, one per tick
    now = 199 * 60.0
    rate = expected_rate(samples, now)
    assert math.isclose(rate, np.mean([t % 7 for t in range(140, 200)]))  # the 60 ticks up to now, req/s
    assert math.isnan(expected_rate([], now)) and math.isnan(expected_rate([(0.0, 5.0)], now))  # nothing recent


def test_expected_rate_matches_the_backtest_placer_input():
    """training/fleet_backtest.Placer: mean over origins m-59..m of the next-minute point, / 60."""
    rng = np.random.default_rng(3)
    point = rng.gamma(0.5, 4.0, size=300)
    m = 250
    backtest = point[m + 1 - 60:m + 1].mean() / 60.0
    assert math.isclose(expected_rate([(t * 60.0, point[t] / 60.0) for t in range(m + 1)], m * 60.0), backtest)


def test_the_pool_forecast_adds_requests_and_is_idle_only_when_every_model_is():
    a = [MinuteForecast(2.0, 5.0, 0.5), MinuteForecast(1.0, 2.0, 0.2), MinuteForecast(0.0, 0.0, 0.0)]
    b = [MinuteForecast(3.0, 4.0, 0.5), MinuteForecast(0.0, 1.0, 0.0)]
    (first, second) = pooled_forecast([a, b])  # over the minutes both forecast
    # points add; the spreads above them (3 and 1, then 1 and 1) add in quadrature, as independent errors do
    assert first.point_rps == 5.0 and math.isclose(first.upper_rps, 5.0 + math.sqrt(10.0)) and math.isclose(first.p_any, 0.75)
    assert second.point_rps == 1.0 and math.isclose(second.upper_rps, 1.0 + math.sqrt(2.0)) and math.isclose(second.p_any, 0.2)
    many = pooled_forecast([[MinuteForecast(1.0, 2.0, 0.5)]] * 100)[0]
    assert many.point_rps == 100.0 and math.isclose(many.upper_rps, 110.0)  # not 200: the spread grows as sqrt(n)
    # a member whose mean ran away (upper not above it) sizes nothing, but still counts for P(any)
    runaway = pooled_forecast([[MinuteForecast(1.0, 2.0, 0.5)], [MinuteForecast(500.0, 500.0, 0.5)]])[0]
    assert (runaway.point_rps, runaway.upper_rps) == (1.0, 2.0) and math.isclose(runaway.p_any, 0.75)
    assert pooled_forecast([]) == [MinuteForecast(0.0, 0.0, 0.0)]


def test_a_route_moves_only_onto_a_ready_target_and_never_while_the_last_move_is_in_flight():
    assert route_step(POOL, POOL, settled=True, target_ready=False) == STAY
    assert route_step(POOL, POOL, settled=False, target_ready=True) == SETTLING
    assert route_step(DEDICATED, POOL, settled=True, target_ready=False) == PREPARE
    assert route_step(DEDICATED, POOL, settled=True, target_ready=True) == MOVE
    assert route_step(POOL, DEDICATED, settled=False, target_ready=True) == WAIT_SETTLE
