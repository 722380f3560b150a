"""The pool plan, pure: tiers (placement by memory: the pool pods' time spent loading models; hysteresis, the fallbacks and bounds of a tier that cannot serve),
each tier's warmth (the choice from the minute history, Knative's retention or a held floor),
the fleet budget, the history the backtest builds vectorised, and the one capacity and load time."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import yaml

from scale.min_scale_policy import MinuteForecast
from scale.placement import DEDICATED, MOVE, POOL, PlacementSettings
from scale.pool_plan import (ModelState, ModelView, PoolPlanSettings, PoolView, TierHistory, TierState, Warmth,
                             budget_target, candidates, choose_warmth, estimate, plan_pool, tier_history)
from tests.support.servers import ROOT

NOW = 29_000_000 * 60.0  # a minute that is a multiple of every cadence used here


def view(models, capacity=64, pool_current=0, pool_warm=True, load_s=0.05):
    return PoolView("pool", models, pool_warm, frozenset(m.name for m in models), pool_current, {}, capacity, load_s)


def model(name, routed=POOL, exists=True, ready=True, failing=False, settled=True):
    return ModelView(name, routed, f"{name}-ded", exists, ready, failing, settled)


def fc(rps, p=0.9):
    return [MinuteForecast(rps, rps * 1.2, p)] * 2


def leaning(tier, since):
    return ModelState(NOW - 60, tier, since, [(NOW - 60 * k, 8.0) for k in range(59, 0, -1)])


SETTINGS = PoolPlanSettings(placement=PlacementSettings(capacity_rps=10.0, hold_minutes=3), every_minutes=1)


# -- tiers ---------------------------------------------------------------------------------------------
def test_a_busy_model_stays_pooled_while_a_pod_holds_the_models_in_every_pod():
    models = [model("busy"), model("quiet")]
    states = {"busy": leaning(POOL, NOW - 3600)}
    out = plan_pool(view(models, capacity=64), {"busy": fc(8.0), "quiet": fc(0.05)}, states, {}, {}, SETTINGS, NOW)
    assert out.models["busy"].decided == POOL and "working set" in out.models["busy"].reason
    # the same pool holding one model a pod cannot hold both, and a load takes half a second: its
    # pods would spend ~58% of their time loading; the busiest leaves, through its own Service
    out = plan_pool(view(models, capacity=1, load_s=0.5), {"busy": fc(8.0), "quiet": fc(1.0)}, states, {}, {}, SETTINGS, NOW)
    assert out.models["busy"].decided == DEDICATED and out.models["busy"].action == MOVE
    assert "of their time loading" in out.models["busy"].reason
    assert out.models["quiet"].decided == POOL


def test_a_pool_whose_pods_load_within_the_bound_dedicates_none():
    # the same pool, the same thrash (one model a pod, two models), at 50 ms a load: its pods
    # spend ~6% of their time loading, within half the headroom Knative's target leaves (15%)
    models = [model("busy"), model("quiet")]
    states = {"busy": leaning(POOL, NOW - 3600)}
    out = plan_pool(view(models, capacity=1, load_s=0.05), {"busy": fc(8.0), "quiet": fc(1.0)}, states, {}, {}, SETTINGS, NOW)
    busy = out.models["busy"]
    assert busy.decided == POOL and busy.action != MOVE and busy.state.tier == POOL
    assert "working set" in busy.reason and "5.8" in busy.reason and "50 ms a load" in busy.reason
    # the time share is the unit: the same loads at ten times the load time are over the bound
    out = plan_pool(view(models, capacity=1, load_s=0.5), {"busy": fc(8.0), "quiet": fc(1.0)}, states, {}, {}, SETTINGS, NOW)
    assert out.models["busy"].decided == DEDICATED


def test_only_as_many_leave_as_it_takes_to_fit_busiest_first():
    models = [model(n) for n in ("a", "b", "c")]
    rates = {"a": 9.0, "b": 8.0, "c": 1.0}
    states = {n: leaning(POOL, NOW - 3600) for n in ("a", "b")}
    for n in ("a", "b"):
        states[n].samples = [(t, rates[n]) for t, _ in states[n].samples]
    out = plan_pool(view(models, capacity=2, load_s=0.5), {n: fc(r) for n, r in rates.items()}, states, {}, {}, SETTINGS, NOW)
    assert [out.models[n].decided for n in ("a", "b", "c")] == [DEDICATED, POOL, POOL]


def test_a_pool_short_of_memory_for_its_sparse_models_keeps_its_busy_one():
    # 80 models at 0.1 req/s and one busy model, 64 a pod, a second a load: more models reach
    # every pod than a pod holds, so the quiet ones load now and then (~28% of the pods' time);
    # the busy one leaving would not mend that (it only takes the pool's pods down, each then
    # seeing more of the quiet ones): it stays (the every-pod count alone dedicated it)
    models = [model("busy")] + [model(f"q{i}") for i in range(80)]
    forecasts = {"busy": fc(30.0), **{f"q{i}": fc(0.1) for i in range(80)}}
    states = {"busy": leaning(POOL, NOW - 3600)}
    states["busy"].samples = [(t, 30.0) for t, _ in states["busy"].samples]
    out = plan_pool(view(models, capacity=64, load_s=1.0), forecasts, states, {}, {}, SETTINGS, NOW)
    assert out.models["busy"].decided == POOL and "no dedicated Service" in out.models["busy"].reason
    # a pool whose thrash the busiest's leaving does mend: three models reach every pod of a
    # pool that holds two; the busiest leaves, only it
    models = [model(n) for n in ("a", "b", "c")]
    forecasts = {"a": fc(30.0), "b": fc(7.0), "c": fc(7.0)}
    states = {n: leaning(POOL, NOW - 3600) for n in ("a", "b", "c")}
    for n in states:
        states[n].samples = [(t, forecasts[n][0].point_rps) for t, _ in states[n].samples]
    out = plan_pool(view(models, capacity=2, load_s=0.5), forecasts, states, {}, {}, SETTINGS, NOW)
    assert [out.models[n].decided for n in ("a", "b", "c")] == [DEDICATED, POOL, POOL]


def test_the_time_share_is_chees_lru_loads_times_the_load_time_over_the_pods():
    from scale.pool_plan import LOAD_TIME_SHARE, TARGET_UTILIZATION, load_rate_of, load_time_share_of, pool_pods

    assert LOAD_TIME_SHARE == pytest.approx((1 - TARGET_UTILIZATION) / 2)  # half Knative's headroom
    assert load_time_share_of([5.0, 1.0], 2, 10.0, 1.0) == 0.0  # every model fits
    busy_and_rare = load_time_share_of([20.0, 20.0, 0.05], 2, 10.0, 0.05)
    even = load_time_share_of([7.0, 7.0, 7.0], 2, 10.0, 0.05)
    assert 0 < busy_and_rare < even < 1  # thrash grows as the third model's share does
    assert load_time_share_of([7.0] * 3, 1, 10.0, 0.05) > even  # and as the pod holds fewer
    # loads/s x the load time over the pods Knative holds at its target (21 req/s at 7 a pod: 3)
    assert pool_pods([7.0] * 3, 10.0) == 3
    assert even == pytest.approx(load_rate_of([7.0] * 3, 2, 10.0) * 0.05 / 3)
    assert load_time_share_of([7.0] * 3, 2, 10.0, 0.5) == pytest.approx(10 * even)


def test_a_dedicated_model_comes_back_once_the_pool_holds_it_for_the_hold():
    models = [model("m", routed=DEDICATED), model("q")]
    forecasts = {"m": fc(8.0), "q": fc(0.5)}
    state = ModelState(NOW - 60, DEDICATED, samples=[(NOW - 60 * k, 8.0) for k in range(59, 0, -1)])
    out = plan_pool(view(models, capacity=64), forecasts, {"m": state}, {}, {}, SETTINGS, NOW)
    p = out.models["m"]
    assert p.decided == DEDICATED and p.state.fits_since == NOW  # the clock starts, no move yet
    later = NOW + 3 * 60
    out = plan_pool(view(models, capacity=64), forecasts, {"m": p.state}, {}, {}, SETTINGS, later)
    assert out.models["m"].decided == POOL and "back to the pool" in out.models["m"].reason
    # a pool that cannot hold it stops the clock
    out = plan_pool(view(models, capacity=1, load_s=0.5), forecasts, {"m": p.state}, {}, {}, SETTINGS, later)
    assert out.models["m"].decided == DEDICATED and out.models["m"].state.fits_since is None
    # ...and so does one whose pods would load within the bound but not within half of it (~10%
    # of their time at 140 ms a load): the band that keeps a model from going back and forth
    out = plan_pool(view(models, capacity=1, load_s=0.14), forecasts, {"m": p.state}, {}, {}, SETTINGS, later)
    assert out.models["m"].decided == DEDICATED and out.models["m"].state.fits_since is None
    # at 50 ms (~3.5%, under half the bound) the same pool takes it back
    out = plan_pool(view(models, capacity=1, load_s=0.05), forecasts, {"m": p.state}, {}, {}, SETTINGS, later)
    assert out.models["m"].decided == POOL and "back to the pool" in out.models["m"].reason


def test_a_model_routed_to_a_deleted_service_goes_back_to_the_pool_without_waiting_to_settle():
    gone = model("m", routed=DEDICATED, exists=False, settled=False)
    out = plan_pool(view([gone]), {"m": fc(8.0)}, {"m": ModelState(NOW - 60, DEDICATED)}, {}, {}, SETTINGS, NOW)
    p = out.models["m"]
    assert p.decided == POOL and p.fallback and p.action == MOVE and "gone" in p.reason
    # the pool is warmed for the move, and is not held at its current value for the dead route
    assert out.tiers["pool"].floor == 1


def test_a_route_to_a_service_being_deleted_but_still_serving_waits_for_a_warm_pool_and_the_load():
    # the Service's deletion is held by the function's finalizer: its pods still answer, so the
    # move back is an ordinary one (a warm pool with the model loaded first), yet counted as a
    # fallback, and the model never goes back to a Service that is going
    draining = ModelView("m", DEDICATED, "m-ded", False, False, False, True, draining=True)
    state = {"m": ModelState(NOW - 60, DEDICATED)}
    def not_loaded(warm):
        return PoolView("pool", [draining], warm, frozenset(), 0, {}, 64)

    cold = plan_pool(not_loaded(False), {"m": fc(8.0)}, state, {}, {}, SETTINGS, NOW).models["m"]
    assert cold.decided == POOL and cold.fallback and cold.action != MOVE and cold.preload
    assert "being deleted" in cold.reason
    warm = plan_pool(not_loaded(True), {"m": fc(8.0)}, state, {}, {}, SETTINGS, NOW).models["m"]
    assert warm.decided == POOL and warm.fallback and warm.action == MOVE and warm.preload


def test_a_route_to_a_deleted_service_moves_to_a_cold_pool_at_once():
    # nothing answers the model's host: a cold pool (the activator buffers, the model loads on
    # its first request) is better than waiting for a pod while every request is lost
    gone = model("m", routed=DEDICATED, exists=False)
    out = plan_pool(view([gone], pool_warm=False), {"m": fc(8.0)}, {"m": ModelState(NOW - 60, DEDICATED)}, {}, {},
                    SETTINGS, NOW)
    p = out.models["m"]
    assert p.fallback and p.action == MOVE and out.tiers["pool"].floor == 1
    # an ordinary move into a cold pool still waits for its pod
    busy_out = plan_pool(view([model("q", routed=DEDICATED)], pool_warm=False), {"q": fc(0.0, 0.0)},
                         {"q": ModelState(NOW - 60, POOL)}, {}, {}, SETTINGS, NOW)
    assert busy_out.models["q"].decided == POOL and busy_out.models["q"].action != MOVE


def test_a_dedicated_service_not_ready_beyond_the_bound_sends_its_model_back():
    failing = model("m", routed=DEDICATED, failing=True, ready=False)
    state = ModelState(NOW - 60, DEDICATED, failing_since=NOW - 100)
    out = plan_pool(view([failing]), {"m": fc(8.0)}, {"m": state}, {}, {}, SETTINGS, NOW)
    assert out.models["m"].decided == DEDICATED  # within the bound (600 s): it may come back
    state = ModelState(NOW - 60, DEDICATED, failing_since=NOW - 700)
    out = plan_pool(view([failing]), {"m": fc(8.0)}, {"m": state}, {}, {}, SETTINGS, NOW)
    assert out.models["m"].decided == POOL and out.models["m"].fallback and "not Ready for 700 s" in out.models["m"].reason


def test_a_mapping_not_ready_holds_the_pool_only_until_the_bound():
    stuck = model("m", routed=POOL, settled=False)  # e.g. a missing domain claim
    state = ModelState(NOW - 60, POOL, unsettled_since=NOW - 100)
    out = plan_pool(view([stuck], pool_current=3), {"m": fc(0.0, 0.0)}, {"m": state}, {}, {}, SETTINGS, NOW)
    assert out.tiers["pool"].floor == 1 and out.not_ready == []  # programming in flight: the pool stays warm
    state = ModelState(NOW - 60, POOL, unsettled_since=NOW - 601)
    out = plan_pool(view([stuck], pool_current=3), {"m": fc(0.0, 0.0)}, {"m": state}, {}, {}, SETTINGS, NOW)
    assert out.not_ready == ["m"] and out.tiers["pool"].floor == 0
    assert out.models["m"].state.unsettled_since == NOW - 601  # the clock survives in the state


# -- warmth ------------------------------------------------------------------------------------------------
def every_third_minute(n=600, start=1000):
    counts = [1.0 if i % 3 == 0 else 0.0 for i in range(n)]
    return TierHistory(start, counts, [0.0] * n)


def test_a_regular_short_gap_is_kept_warm_by_knatives_retention():
    w, _ = choose_warmth(every_third_minute(), PoolPlanSettings())
    assert w == Warmth("keepalive", tail=2)
    tiers = {"pool": TierState(w, NOW - 60, last_active_minute=int(NOW // 60) - 1)}
    out = plan_pool(view([model("a")]), {"a": fc(0.0, 0.0)}, {}, tiers, {}, PoolPlanSettings(), NOW)
    assert out.tiers["pool"].retention == "120s" and out.tiers["pool"].floor == 0
    # P(any) warms no pod under a keep-alive: the forecast only sizes
    assert all(f.p_any == 0 for f in out.tiers["pool"].forecast)


def test_a_keep_alive_beyond_the_webhooks_hour_is_a_floor_held_by_the_plan():
    tiers = {"pool": TierState(Warmth("keepalive", tail=180), NOW - 60, last_active_minute=int(NOW // 60) - 100)}
    out = plan_pool(view([model("a")]), {"a": fc(0.0, 0.0)}, {}, tiers, {}, PoolPlanSettings(), NOW)
    assert out.tiers["pool"].retention is None and out.tiers["pool"].floor == 1
    tiers["pool"].last_active_minute = int(NOW // 60) - 181
    out = plan_pool(view([model("a")]), {"a": fc(0.0, 0.0)}, {}, tiers, {}, PoolPlanSettings(), NOW)
    assert out.tiers["pool"].floor == 0


def test_a_forecast_that_knows_when_requests_come_beats_every_keep_alive():
    n = 2000
    rng = np.random.default_rng(1)
    active = rng.random(n) < 0.02
    counts = [5.0 if a else 0.0 for a in active]
    p_any = [0.95 if a else 0.001 for a in active]  # the forecast saw each one coming
    w, _ = choose_warmth(TierHistory(0, counts, p_any), PoolPlanSettings())
    assert w.kind == "forecast"
    out = plan_pool(view([model("a")]), {"a": fc(1.0)}, {}, {"pool": TierState(w, NOW - 60)}, {}, PoolPlanSettings(), NOW)
    assert out.tiers["pool"].retention is None and out.tiers["pool"].price == w.price


def test_the_estimate_models_knatives_tail_and_the_retention():
    h = TierHistory(0, [1.0] + [0.0] * 20 + [1.0], [0.0] * 22)
    kpa, cold_kpa = estimate(h, Warmth("knative"), PoolPlanSettings())
    keep, cold_keep = estimate(h, Warmth("keepalive", tail=30), PoolPlanSettings())
    # a cold request's pod from the request on (half its minute), then the stable window's 60 s
    # from the request: half the next minute (not all of it)
    assert (kpa, cold_kpa) == ((0.5 + 0.5 + 0.5) * 60.0, 2.0)
    assert cold_keep == 1.0 and keep == 21.5 * 60.0  # warm from the first request on


def test_a_forecast_candidate_is_priced_by_the_pods_its_sizing_holds():
    # a busy tier: every minute has requests and the forecast is sure of them. Knative alone
    # holds one pod a minute; the forecast sized four. Counted as one warm pod a minute, the two
    # cost the same and the forecast at the user's price won the tie; priced, the keep-alive wins
    n = 600
    h = TierHistory(0, [120.0] * n, [0.99] * n, None, [30.0] * n)
    settings = PoolPlanSettings()
    fcast, cold_f = estimate(h, Warmth("forecast", 300.0), settings)
    keep, cold_k = estimate(h, Warmth("keepalive", tail=2), settings)
    assert cold_f == 0 and keep == (n - 0.5) * 60.0 and fcast > 3 * keep  # the first minute cold
    w, _ = choose_warmth(h, settings)
    assert estimate(h, w, settings)[0] <= n * 60.0  # whatever wins holds no sized pods
    # without the upper column (as before) the estimate cannot tell them apart
    blind = TierHistory(0, h.counts, h.p_any)
    assert estimate(blind, Warmth("forecast", 300.0), settings)[0] == n * 60.0  # one pod a minute


def test_a_forecast_with_a_retention_covers_what_each_alone_misses():
    # requests in bursts the forecast sees coming (p high before each burst's first minute), with
    # short gaps inside a burst that it does not: the combination is cold neither at a burst's
    # start nor in its gaps
    counts, p_any = [], []
    for _ in range(40):
        counts += [0.0] * 30 + [3.0, 0.0, 0.0, 3.0, 0.0, 0.0, 3.0]
        p_any += [0.0] * 29 + [0.99] + [0.99] + [0.0] * 6
    h = TierHistory(0, counts, p_any)
    settings = PoolPlanSettings()
    both = estimate(h, Warmth("forecast", 300.0, tail=2), settings)[1]
    assert both < estimate(h, Warmth("forecast", 300.0), settings)[1]
    assert both < estimate(h, Warmth("keepalive", tail=2), settings)[1]
    tiers = {"pool": TierState(Warmth("forecast", 300.0, tail=2), NOW - 60)}
    out = plan_pool(view([model("a")]), {"a": fc(1.0)}, {}, tiers, {}, PoolPlanSettings(), NOW)
    assert out.tiers["pool"].retention == "120s" and out.tiers["pool"].forecast[0].p_any > 0


def test_the_fleet_budget_takes_the_fewest_cold_starts_its_allowance_affords():
    rng = np.random.default_rng(2)
    counts = [float(rng.random() < 0.05) for _ in range(3000)]
    h = TierHistory(0, counts, [0.0] * len(counts))
    per_model = 400.0  # pod-minutes per-model Knative would have spent on these minutes
    spends = {}
    for b in (0.5, 1.0, 2.0, 4.0, 10.0):
        # the budget's own candidates (its finer keep-alive grid), scored on the same minutes
        scored = [estimate(h, c, PoolPlanSettings()) for c in candidates(h, PoolPlanSettings(fleet_budget=b))]
        cheapest = min(pod_s for pod_s, _ in scored)
        w, _ = choose_warmth(TierHistory(0, counts, h.p_any, per_model), PoolPlanSettings(fleet_budget=b))
        spends[b], cold = estimate(h, w, PoolPlanSettings())
        target = b * per_model * 60
        assert spends[b] <= target or spends[b] == cheapest, (b, spends[b], target)
        # nothing the allowance affords is estimated colder than the choice
        assert all(c >= cold for pod_s, c in scored if pod_s <= target)
    assert spends[0.5] <= spends[1.0] <= spends[2.0] <= spends[4.0] <= spends[10.0]
    assert len(set(spends.values())) >= 3  # the budget does steer the spend


DAY_START = (NOW // 86400 + 1) * 86400  # a minute the daily warmth choice is due


def budget_history(n_days=3, start=int(DAY_START // 60) - 3 * 1440, seed=5):
    rng = np.random.default_rng(seed)
    counts = [float(rng.random() < 0.05) for _ in range(n_days * 1440)]
    per_model = [0.0] + [1.0 if counts[i] else 0.5 if counts[i - 1] else 0.0 for i in range(1, len(counts))]
    return TierHistory(start, counts, [0.0] * len(counts), float(sum(per_model)), (), per_model)


def test_the_fleet_budget_carries_what_the_run_left_unspent_or_overspent():
    h = budget_history()
    settings = PoolPlanSettings(fleet_budget=2.0)  # one model: per-model Knative is the cheapest candidate
    even, _ = choose_warmth(h, settings)
    # overspent (underspent) twice the history's allowance: paid back over the history's span
    # (a week of daily choices), at most the budget's own rate again
    short, _ = choose_warmth(h, settings, carry_s=-2.0 * 2.0 * h.per_model_pod_minutes * 60)
    long_, _ = choose_warmth(h, settings, carry_s=+2.0 * 2.0 * h.per_model_pod_minutes * 60)
    spend = {w: estimate(h, w, settings)[0] for w in (even, short, long_)}
    assert spend[short] < spend[even] < spend[long_]


def test_the_fleet_budget_books_the_warmth_that_was_in_force_against_its_allowance():
    h = budget_history()
    settings = PoolPlanSettings(fleet_budget=2.0)
    dear = TierState(Warmth("keepalive", tail=720), DAY_START - 1440 * 60)  # in force over the last day
    out = plan_pool(view([model("a")]), {"a": fc(0.0, 0.0)}, {}, {"pool": dear}, {"pool": h}, settings, DAY_START)
    booked = out.tier_states["pool"]
    last_day = TierHistory(h.start_minute + 2 * 1440, h.counts[2 * 1440:], h.p_any[2 * 1440:])
    # the last day's minutes, with the day before as context: the keep-alive running into it counts
    assert booked.spent_s == estimate(h, dear.warmth, settings, weights=[0.0] * 2 * 1440 + [1.0] * 1440)[0]
    assert booked.spent_s > estimate(last_day, dear.warmth, settings)[0]
    debt = booked.spent_s - 2.0 * sum(h.per_model[2 * 1440:]) * 60.0
    assert booked.spent_s - booked.allowed_s == pytest.approx(debt)  # the 12-hour keep-alive overspent its day...
    assert 0 < budget_target(h, settings, booked.allowed_s - booked.spent_s) < 2.0
    # paid back over a one-day span the debt is more than the next period can save: the debt
    # carried is the most it can pay back at the budget's own rate
    one_day = replace(settings, history_minutes=1440)
    capped = plan_pool(view([model("a")]), {"a": fc(0.0, 0.0)}, {}, {"pool": dear}, {"pool": h}, one_day,
                       DAY_START).tier_states["pool"]
    carried = capped.spent_s - capped.allowed_s
    assert capped.spent_s == booked.spent_s and 0 < carried < debt
    assert budget_target(h, one_day, -carried) == pytest.approx(0.0, abs=1e-9)  # the next period spends nothing
    fresh = plan_pool(view([model("a")]), {"a": fc(0.0, 0.0)}, {}, {}, {"pool": h}, settings, DAY_START).tier_states["pool"]
    # ...so the next choice spends less than one made with an even account
    assert estimate(h, booked.warmth, settings)[0] < estimate(h, fresh.warmth, settings)[0]
    assert TierState.from_json(booked.to_json()) == booked  # the account survives Redis


def test_the_fleet_budget_is_a_ratio_on_the_recent_history_so_a_fleets_growth_cancels():
    """A pool whose first six days saw five sparse models and whose last day sees thirty, busy
    in the day's working hours: on the sparse days every keep-alive costs many times per-model
    Knative's spend, on the busy one about as much. The budget prices the next day by the ratio
    on the recent minutes: its choice spends nearer the budget on today's traffic than the
    choice the week's flat ratio affords, and no more than the budget."""
    rng = np.random.default_rng(7)
    days, start = 7, int(DAY_START // 60) - 7 * 1440
    names = [f"m{i}" for i in range(30)]
    counts: dict[str, dict[int, float]] = {n: {} for n in names}
    for m in range(days * 1440):
        busy = m >= (days - 1) * 1440
        for i, n in enumerate(names):
            rate = (0.05 if 480 <= m % 1440 < 1200 else 0.001) if busy else 0.01 if i < 5 else 0.0
            counts[n][start + m] = float(rng.random() < rate)
    grown = tier_history(start + days * 1440, days * 1440, counts, {}, names)
    settings = PoolPlanSettings(fleet_budget=1.0, hybrid=False, timeofday=False)

    def last_day_ratio(w: Warmth) -> float:
        i = len(grown.counts) - 1440
        day = TierHistory(grown.start_minute + i, grown.counts[i:], grown.p_any[i:])
        return estimate(day, w, settings)[0] / (60.0 * sum(grown.per_model[i:]))

    flat = {w: estimate(grown, w, settings) for w in candidates(grown, settings)}
    week = min((w for w, (pod_s, _) in flat.items() if pod_s <= 1.05 * 60.0 * grown.per_model_pod_minutes),
               key=lambda w: flat[w][1])
    w, _ = choose_warmth(grown, settings)
    assert last_day_ratio(week) < last_day_ratio(w) <= 1.05, (week, w)
    assert flat[w][0] > 1.05 * 60.0 * grown.per_model_pod_minutes  # a week's flat ratio would not afford it


def test_a_dedicated_tier_carries_the_pools_retention():
    busy = model("busy", routed=DEDICATED)
    tiers = {"pool": TierState(Warmth("keepalive", tail=5), NOW - 60)}
    state = ModelState(NOW - 60, DEDICATED)
    out = plan_pool(view([busy, model("quiet")]), {"busy": fc(8.0), "quiet": fc(0.05)}, {"busy": state}, tiers, {},
                    PoolPlanSettings(every_minutes=7), NOW + 60)
    assert out.tiers["pool"].retention == "300s"
    assert out.tiers["busy-ded"].retention == "300s" and "no colder than in the pool" in out.tiers["busy-ded"].reason
    # a dedicated Service nothing routes to keeps the template's own (it goes to zero)
    idle = plan_pool(view([model("busy"), model("quiet")]), {"busy": fc(8.0), "quiet": fc(0.05)}, {}, tiers, {},
                     PoolPlanSettings(every_minutes=7), NOW + 60)
    assert idle.tiers["busy-ded"].idle and idle.tiers["busy-ded"].retention is None


def test_the_backtests_vectorised_history_is_the_functions():
    from training.fleet_backtest import FleetOptions, Forecasts, PoolPlanDriver

    rng = np.random.default_rng(4)
    n_models, n = 3, 200
    counts = (rng.random((n_models, n)) < 0.2) * rng.integers(1, 2000, (n_models, n)).astype(float)
    p = rng.random((n_models, n, 2)).astype(np.float32)
    p[:, :20] = np.nan
    point = np.where(np.isnan(p), np.nan, rng.random((n_models, n, 2)) * 600).astype(np.float32)
    upper = (point * rng.uniform(0.8, 2.0, point.shape)).astype(np.float32)  # some under the point: not backed
    driver = PoolPlanDriver(counts, Forecasts(point, upper, p), ["a", "b", "c"], [PoolPlanSettings()], FleetOptions(), 5000)
    settings = PoolPlanSettings(history_minutes=120)
    vectorised = driver.history(150, [0, 2], settings)
    by_minute = {name: {5000 + m: float(counts[i, m]) for m in range(n)} for i, name in enumerate("abc")}
    p_cov = {name: {5000 + m: float(driver.p_cov[i, m]) for m in range(n) if not math.isnan(driver.p_cov[i, m])}
             for i, name in enumerate("abc")}
    from scale.min_scale_policy import MinuteForecast as F
    from scale.pool_plan import covered_size
    sizes = {name: {5000 + m: covered_size([F(float(point[i, m, k]) / 60, float(upper[i, m, k]) / 60, 0.5) for k in range(2)])
                    for m in range(20, n)} for i, name in enumerate("abc")}
    pure = tier_history(5150, 120, by_minute, p_cov, ["a", "c"], sizes, settings.sizing.capacity_rps)
    assert pure.start_minute == vectorised.start_minute and pure.counts == vectorised.counts
    assert pure.per_model_pod_minutes == vectorised.per_model_pod_minutes
    assert pure.per_model == vectorised.per_model and sum(pure.per_model) == pure.per_model_pod_minutes
    assert pure.per_model_pod_minutes > sum(1 for i in (0, 2) for m in range(30, 150) if counts[i, m] > 0)  # busy minutes hold more
    assert all((x is None and y is None) or abs(x - y) < 1e-9 * max(1.0, x) for x, y in zip(pure.upper, vectorised.upper))
    assert any(u is not None for u in pure.upper)
    assert all((x is None and y is None) or abs(x - y) < 1e-12 for x, y in zip(pure.p_any, vectorised.p_any))


# -- one capacity ------------------------------------------------------------------------------------------------
def test_one_capacity_infer_scale_and_the_backtest_read_from_the_pool_manifest():
    from scale.pool_placement import capacity_models
    from scale.pool_settings import PoolSettings

    from training.fleet_backtest import pool_capacity_models

    pool = next(d for d in yaml.safe_load_all((ROOT / "serving" / "pool" / "infer-pool.yaml").read_text())
                if d and d.get("kind") == "Service")
    env = {e["name"]: e["value"] for e in pool["spec"]["template"]["spec"]["containers"][0]["env"]}
    model_mb = float(pool["metadata"]["annotations"]["predictive-scaling.io/model-memory-mb"])
    expected = int(float(env["POOL_MEMORY_MB"]) // model_mb)
    assert capacity_models(pool, PoolSettings()) == expected == pool_capacity_models()
    # the scale function reads the pool Service's own POOL_MEMORY_MB: change it there, and only there
    pool["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "POOL_MEMORY_MB", "value": "40"}]
    assert capacity_models(pool, PoolSettings(models_per_pod=64)) == int(40 // model_mb)
    # infer reads the same variable (its settings table): the number is one
    assert "POOL_MEMORY_MB" in (ROOT / "functions" / "infer" / "infer" / "settings.py").read_text()


@pytest.mark.parametrize("bad", ["", "x"])
def test_an_unreadable_model_memory_falls_back_to_the_setting(bad):
    from scale.pool_placement import capacity_models
    from scale.pool_settings import PoolSettings

    pool = {"metadata": {"annotations": {"predictive-scaling.io/model-memory-mb": bad}},
            "spec": {"template": {"spec": {"containers": [{"env": [{"name": "POOL_MEMORY_MB", "value": "256"}]}]}}}}
    assert capacity_models(pool, PoolSettings(models_per_pod=7)) == 7


# -- one load time ---------------------------------------------------------------------------------------------
def test_one_load_time_the_scale_function_and_the_backtest_read_the_same_way():
    from scale.pool_placement import model_load_ms
    from scale.pool_settings import PoolSettings

    from training.fleet_backtest import FleetOptions, pool_model_load_ms

    pool = next(d for d in yaml.safe_load_all((ROOT / "serving" / "pool" / "infer-pool.yaml").read_text())
                if d and d.get("kind") == "Service")
    # the manifest sets none: the setting's documented default, the backtest's default too
    assert model_load_ms(pool, PoolSettings()) == PoolSettings.model_load_ms == 50.0 == pool_model_load_ms()
    assert PoolView("pool", [], False, frozenset(), 0).model_load_s * 1000.0 == PoolSettings.model_load_ms  # the pure plan's default is the setting's
    assert FleetOptions().model_load_ms == 50.0
    assert PoolSettings.from_env({"POOL_MODEL_LOAD_MS": "400"}).model_load_ms == 400.0
    # the pool Service's annotation says its models' load time, over the setting
    pool["metadata"].setdefault("annotations", {})["predictive-scaling.io/model-load-ms"] = "250"
    assert model_load_ms(pool, PoolSettings(model_load_ms=10.0)) == 250.0


@pytest.mark.parametrize("bad", ["", "x", "-5", "nan"])
def test_an_unreadable_model_load_time_falls_back_to_the_setting(bad):
    from scale.pool_placement import model_load_ms
    from scale.pool_settings import PoolSettings

    pool = {"metadata": {"annotations": {"predictive-scaling.io/model-load-ms": bad}}}
    assert model_load_ms(pool, PoolSettings(model_load_ms=70.0)) == 70.0


def test_the_budgets_target_stays_within_nothing_and_twice_the_budget():
    """A balance pays back at most the budget's own rate again each period, either way; a
    history with no per-model spend to price the period against leaves the budget as it is."""
    rng = np.random.default_rng(3)
    counts = [float(rng.random() < 0.05) for _ in range(3000)]
    h = TierHistory(0, counts, [0.0] * len(counts), 0.2 * len(counts), per_model=[0.2] * len(counts))
    settings = PoolPlanSettings(fleet_budget=1.5)
    assert budget_target(h, settings, 1e15) == pytest.approx(3.0)  # a huge surplus: twice the budget, no more
    assert budget_target(h, settings, -1e15) == pytest.approx(0.0, abs=1e-9)  # a huge debt: nothing, never below
    assert budget_target(h, settings, 0.0) == pytest.approx(1.5)
    idle = TierHistory(0, [0.0] * 100, [0.0] * 100, 0.0, per_model=[0.0] * 100)
    assert budget_target(idle, settings, 1e9) == 1.5
