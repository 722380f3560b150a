"""Placement between the pool and dedicated Services: hysteresis in rate and in time; the
budget price's direction and bounds; pre-loading."""

from __future__ import annotations

import math

from scale.min_scale_policy import MinuteForecast
from scale.placement import (DEDICATED, POOL, BudgetSettings, Placement, PlacementSettings, models_per_pod, place,
                             place_fleet, preload, tune_price)

S = PlacementSettings(capacity_rps=10.0, hold_minutes=30)  # dedicate at >= 7 req/s, back below 3.5


def walk(rates, start=Placement(), every_s=60.0):
    p, tiers = start, []
    for i, r in enumerate(rates):
        p = place(r, p, i * every_s, S)
        tiers.append(p.tier)
    return p, tiers


def test_a_busy_model_is_dedicated_only_after_the_hold():
    p, tiers = walk([8.0] * 31)
    assert tiers[:30] == [POOL] * 30 and tiers[30] == DEDICATED  # 30 minutes at >= 7 req/s
    assert p.leaning_since is None


def test_a_dip_restarts_the_hold():
    _, tiers = walk([8.0] * 20 + [6.9] + [8.0] * 30)
    assert DEDICATED not in tiers[:51]
    _, tiers = walk([8.0] * 20 + [6.9] + [8.0] * 31)
    assert tiers[-1] == DEDICATED


def test_the_band_between_the_thresholds_keeps_either_tier():
    dedicated = Placement(DEDICATED)
    p, tiers = walk([5.0] * 200, start=dedicated)  # between 3.5 and 7: no move either way
    assert set(tiers) == {DEDICATED}
    p, tiers = walk([5.0] * 200)
    assert set(tiers) == {POOL}
    p, tiers = walk([3.0] * 31, start=dedicated)  # under 3.5 for the hold: back to the pool
    assert tiers[29] == DEDICATED and tiers[30] == POOL


def test_no_forecast_holds_and_clears_the_lean():
    leaning = Placement(POOL, 0.0)
    assert place(float("nan"), leaning, 3600.0, S) == Placement(POOL, None)
    assert place(None, Placement(DEDICATED), 0.0, S).tier == DEDICATED


def test_place_fleet_moves_only_models_with_a_forecast():
    current = {"a": Placement(POOL, 0.0), "b": Placement(DEDICATED)}
    out = place_fleet({"a": 9.0}, current, 30 * 60.0, S)
    assert out["a"].tier == DEDICATED and out["b"] == current["b"]


def test_budget_price_moves_toward_the_budget_within_its_bounds():
    b = BudgetSettings(gain=0.5, max_step=2.0, min_price=10.0, max_price=1000.0)
    # under budget by one step's budget: pay more to avoid cold starts, by exp(0.5)
    assert math.isclose(tune_price(300.0, spent=90.0, budget=100.0, step_budget=10.0, settings=b), 300.0 * math.exp(0.5))
    assert math.isclose(tune_price(300.0, spent=110.0, budget=100.0, step_budget=10.0, settings=b), 300.0 * math.exp(-0.5))
    # the same gap moves the price the same, early or late: it is measured in steps of budget
    assert math.isclose(tune_price(300.0, 990.0, 1000.0, 10.0, b), tune_price(300.0, 90.0, 100.0, 10.0, b))
    assert tune_price(300.0, spent=0.0, budget=100.0, step_budget=10.0, settings=b) == 600.0  # at most a doubling
    assert tune_price(300.0, spent=500.0, budget=100.0, step_budget=10.0, settings=b) == 150.0
    assert tune_price(900.0, spent=0.0, budget=100.0, step_budget=10.0, settings=b) == 1000.0
    assert tune_price(300.0, spent=0.0, budget=0.0, step_budget=0.0, settings=b) == 300.0  # nothing to compare: hold
    assert math.isclose(tune_price(300.0, 100.0, 100.0, 10.0, b), 300.0)


def test_preload_takes_the_likeliest_models_up_to_what_a_pod_holds():
    f = {m: [MinuteForecast(1, 1, p), MinuteForecast(1, 1, 0.0)] for m, p in (("a", 0.9), ("b", 0.1), ("c", 0.5), ("d", 0.6))}
    assert preload(f, models_per_pod=2, threshold=0.2) == ["a", "d"]
    assert preload(f, models_per_pod=10, threshold=0.2) == ["a", "d", "c"]
    assert models_per_pod(1024, 16) == 64 and models_per_pod(10, 16) == 1
