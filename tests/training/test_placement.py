"""Placement between the pool and dedicated Services: hysteresis in rate and in time; the
budget price's direction and bounds; pre-loading."""

from __future__ import annotations

import math

from scale.min_scale_policy import MinuteForecast
from scale.placement import (DEDICATED, POOL, BudgetSettings, Placement, PlacementSettings, models_per_pod, place,
                             allowed_spend, budget_price, place_fleet, preload)

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


def test_budget_price_is_the_one_whose_choices_spend_nearest_the_allowed():
    b = BudgetSettings(min_price=10.0, max_price=1000.0)
    # two Services, three candidates each: (pod-seconds, cold starts) over the same history
    pod = [[100.0, 200.0, 400.0], [50.0, 60.0, 300.0]]
    cold = [[10.0, 4.0, 1.0], [2.0, 1.0, 0.0]]

    def spent_at(price):
        return sum(min(zip(p, c), key=lambda pc: pc[0] + price * pc[1])[0] for p, c in zip(pod, cold))

    price = budget_price(pod, cold, allowed=270.0, settings=b)
    # Service 0 takes 200 (4 cold), Service 1 takes 60 (1 cold): 260, the nearest to 270 (the
    # next step up, Service 0 at 400, spends 460)
    assert spent_at(price) == 260.0 < 270.0 < spent_at(price * 1.01)
    # nearest on either side: 440 allowed is nearer 460 than 260, so it rounds up
    assert spent_at(budget_price(pod, cold, allowed=440.0, settings=b)) == 460.0
    assert budget_price(pod, cold, allowed=1e9, settings=b) == 1000.0  # everything fits: the dearest
    assert budget_price(pod, cold, allowed=0.0, settings=b) == 10.0  # nothing fits: the cheapest
    # more budget never buys a lower price
    allowances = [150.0, 200.0, 260.0, 300.0, 460.0, 700.0]
    prices = [budget_price(pod, cold, a, b) for a in allowances]
    assert prices == sorted(prices)


def test_allowed_spend_makes_up_the_gap_over_as_long_as_it_took():
    b = BudgetSettings(recover_hours=24.0)
    assert allowed_spend(100.0, spent=0.0, budgeted=0.0, hours=1.0, elapsed_hours=5.0, settings=b) == 100.0
    # 240 pod-seconds under budget after 48 hours: a 24th of it (the cap) is due in the next hour
    assert allowed_spend(100.0, spent=760.0, budgeted=1000.0, hours=1.0, elapsed_hours=48.0, settings=b) == 110.0
    assert allowed_spend(100.0, spent=1240.0, budgeted=1000.0, hours=1.0, elapsed_hours=48.0, settings=b) == 90.0
    # the same gap after 4 hours: a quarter of it
    assert allowed_spend(100.0, spent=760.0, budgeted=1000.0, hours=1.0, elapsed_hours=4.0, settings=b) == 160.0
    assert allowed_spend(100.0, spent=1e6, budgeted=0.0, hours=1.0, elapsed_hours=4.0, settings=b) == 0.0  # never negative
    assert allowed_spend(100.0, spent=0.0, budgeted=240.0, hours=48.0, elapsed_hours=48.0, settings=b) == 100.0 * 48 + 240.0


def test_preload_takes_the_likeliest_models_up_to_what_a_pod_holds():
    f = {m: [MinuteForecast(1, 1, p), MinuteForecast(1, 1, 0.0)] for m, p in (("a", 0.9), ("b", 0.1), ("c", 0.5), ("d", 0.6))}
    assert preload(f, models_per_pod=2, threshold=0.2) == ["a", "d"]
    assert preload(f, models_per_pod=10, threshold=0.2) == ["a", "d", "c"]
    assert models_per_pod(1024, 16) == 64 and models_per_pod(10, 16) == 1
