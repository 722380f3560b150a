"""The fallback to the keep-alive for a service whose forecast has no measured skill: the pure
rule (scale.fallback), the whole decision that the backtest scores (scale.decision.plan through
training's PolicyController), and the function over real HTTP reading the event's `skill`."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import numpy as np

from scale.annotations import ServicePolicy
from scale.decision import MIN_SCALE, ServiceView, plan
from scale.fallback import FallbackSettings, Skill, forecast_helps, keepalive_forecast
from scale.min_scale_policy import MinuteForecast, PolicySettings
from tests.scale.conftest import LABEL, TICK0, by_service, decisions, forecast, minutes, send
from training import skill as skill_math
from training.controllers import ForecastTable, PolicyController

FB = FallbackSettings(min_brier_skill=0.0, min_minutes=30, keepalive_minutes=10)
S = PolicySettings(capacity_rps=10.0, cold_start_cost_pod_s=300.0, max_scale=5, cooldown_s=0, burst_risk=None)
POLICY = ServicePolicy(S, dry_run=False, user_window=None, may_set_window=True)
NO_SKILL = Skill(brier_skill=-0.4, mase=1.3, minutes=60)
SKILL = Skill(brier_skill=0.3, mase=0.7, minutes=60)
IDLE = [0.0] * 60
RECENT_REQUEST = [0.0] * 55 + [3.0] + [0.0] * 4


def test_only_evidence_of_no_skill_sends_a_service_to_the_keepalive():
    assert not forecast_helps(NO_SKILL, FB)
    assert forecast_helps(SKILL, FB)
    assert forecast_helps(None, FB)  # not measured: the forecast
    assert forecast_helps(Skill(-0.4, 1.3, 29), FB)  # too few scored minutes judge nothing
    assert forecast_helps(NO_SKILL, FallbackSettings(min_brier_skill=None))  # fallback off
    # P(any) undefined (busy every minute): the forecast is kept, whatever the point's MASE
    assert forecast_helps(Skill(math.nan, 1.2, 60), FB)
    assert forecast_helps(Skill(math.nan, math.nan, 60), FB)


def test_the_keepalive_forecast_is_warm_while_a_request_came_recently_and_on_unobserved_minutes():
    assert [m.p_any for m in keepalive_forecast(RECENT_REQUEST, 5, FB)] == [1.0] * 5
    assert [m.p_any for m in keepalive_forecast(IDLE, 5, FB)] == [0.0] * 5
    assert keepalive_forecast([5.0] + [0.0] * 10, 5, FB)[0].p_any == 0.0  # 11 minutes ago: out of the window
    assert keepalive_forecast([0.0] * 9 + [None], 5, FB)[0].p_any == 1.0  # missing data never lowers


def test_plan_falls_back_only_for_a_forecast_without_skill():
    view = ServiceView(["a"], {"a": {MIN_SCALE: "0"}})
    eager = [MinuteForecast(2.0, 42.0, 0.99)] * 5
    assert plan(view, POLICY, eager, 0.0, None, skill=SKILL, observed=IDLE, fallback=FB).min_scale == 5
    p = plan(view, POLICY, eager, 0.0, None, skill=NO_SKILL, observed=IDLE, fallback=FB)
    assert p.min_scale == 0 and p.baseline and "keep-alive" in p.reason
    quiet = [MinuteForecast(0.0, 0.0, 0.01)] * 5
    p = plan(view, POLICY, quiet, 0.0, None, skill=NO_SKILL, observed=RECENT_REQUEST, fallback=FB)
    assert p.min_scale == 1 and p.baseline
    # without observed minutes there is nothing to keep alive on: the forecast decides
    assert plan(view, POLICY, eager, 0.0, None, skill=NO_SKILL, observed=None, fallback=FB).min_scale == 5
    # no fallback settings (the old call): the forecast
    assert plan(view, POLICY, eager, 0.0, None, skill=NO_SKILL, observed=IDLE).min_scale == 5


def test_rolling_skill_is_walk_forward_and_sends_a_noisy_forecast_to_the_keepalive():
    # A series with a request every 10th minute; a P(any) that is right, and one that is
    # confidently wrong (0.9 on the idle minutes, 0 on the active ones).
    n, first = 600, 100
    counts = np.where(np.arange(n) % 10 == 0, 2.0, 0.0)
    actual = counts[first:]
    good = (actual > 0).astype(float)
    bad = np.where(actual > 0, 0.0, 0.9)
    naive = np.zeros(n - first)
    g = skill_math.rolling_skill(actual, good, naive, counts, first, window=60)
    b = skill_math.rolling_skill(actual, bad, naive, counts, first, window=60)
    assert g["minutes"][0] == 0 and g["minutes"][200] == 60  # the first decision has nothing scored
    assert g["brier_skill"][200] == 1.0 and b["brier_skill"][200] < 0
    # the figure at decision i only uses minutes before i - 1: changing the future changes nothing
    later = bad.copy()
    later[150:] = good[150:]
    changed = skill_math.rolling_skill(actual, later, naive, counts, first, window=60)["brier_skill"]
    assert np.array_equal(changed[:152], b["brier_skill"][:152], equal_nan=True)
    assert changed[152] > b["brier_skill"][152]  # minute 150 is scored from decision 152 on
    table = ForecastTable(first, np.zeros((n - first, 5)), np.zeros((n - first, 5)), np.repeat(bad[:, None], 5, axis=1))
    controller = PolicyController(table, S, b, FB)
    for m in range(first, n):
        controller.control(m, counts)
    assert controller.baseline_minutes > (n - first) // 2  # once measured, the keep-alive decides


def _event(tick_minute: int, entry_extra: dict, event_id: str, upper_rps: float, p_any: float):
    event = forecast(tick_minute, {"models/wine": minutes(upper_rps, p_any)}, event_id)
    data = event.get_data()
    start = datetime.fromtimestamp((tick_minute - 60) * 60, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    data["services"][0].update({"observed": {"start": start, "requests": IDLE}, **entry_extra})
    return event


def test_over_http_a_service_without_skill_is_kept_by_the_keepalive(api_double, scale_fn):
    api_double.add_service("models", "wine", LABEL)
    fn = scale_fn(api_double)
    no_skill = {"skill": {"brier_skill": -0.4, "mase": 1.3, "minutes": 60}}
    d = by_service(decisions(send(fn, _event(TICK0, no_skill, "f1", 42, 0.99))))["models/wine"]
    assert d["min_scale"] == 0 and d["fallback"] == "keep-alive" and "keep-alive" in d["reason"]
    assert api_double.annotations("revisions", "models", "wine-00001")[MIN_SCALE] == "0"
    # the skill comes back: the forecast decides again
    with_skill = {"skill": {"brier_skill": 0.3, "mase": None, "minutes": 60}}
    d = by_service(decisions(send(fn, _event(TICK0 + 1, with_skill, "f2", 42, 0.99))))["models/wine"]
    assert d["min_scale"] == 5 and "fallback" not in d
    assert api_double.annotations("revisions", "models", "wine-00001")[MIN_SCALE] == "5"


def test_over_http_the_fallback_can_be_turned_off(api_double, scale_fn):
    api_double.add_service("models", "wine", LABEL)
    fn = scale_fn(api_double, FALLBACK_MIN_BRIER_SKILL="off")
    no_skill = {"skill": {"brier_skill": -0.4, "mase": 1.3, "minutes": 60}}
    d = by_service(decisions(send(fn, _event(TICK0, no_skill, "o1", 42, 0.99))))["models/wine"]
    assert d["min_scale"] == 5 and "fallback" not in d


def test_over_http_a_malformed_skill_is_a_400(api_double, scale_fn):
    api_double.add_service("models", "wine", LABEL)
    fn = scale_fn(api_double)
    for i, bad in enumerate(({"brier_skill": "x", "mase": 1.0, "minutes": 60}, {"brier_skill": 0.1, "mase": 1.0},
                             {"brier_skill": 0.1, "mase": 1.0, "minutes": -1}, [1, 2])):
        response = send(fn, _event(TICK0, {"skill": bad}, f"m{i}", 42, 0.99))
        assert response.status_code == 400 and "skill" in response.json()["error"], response.text


def test_the_fleet_backtest_schedules_the_same_fallback_per_model():
    """training.fleet_backtest.PolicySchedule (per-model Knative in the fleet backtest) reads the
    rolling skill of each model's own forecasts, as the function reads the event's: a confidently
    wrong P(any) ends in the keep-alive's schedule, a right one keeps the forecast's."""
    from training.fleet_backtest import PolicySchedule, keepalive_schedule

    n, first = 900, 100
    counts = np.where(np.arange(n) % 30 == 0, 2.0, 0.0)
    hit = (counts > 0).astype(float)
    nan = np.full(first, np.nan)
    # P(any) at minute m forecasts minutes m, m+1 (the covered minutes)
    right = np.stack([hit, np.roll(hit, -1)], axis=1)
    wrong = np.stack([1 - hit, 1 - np.roll(hit, -1)], axis=1) * 0.9
    settings = [S]
    for p_any, expect_keepalive in ((right, False), (wrong, True)):
        p = np.vstack([np.tile(nan[:, None], 2), p_any[first:]])
        point = np.vstack([np.tile(nan[:, None], 2), np.zeros((n - first, 2))])
        out = np.zeros(n, np.int64)
        PolicySchedule(point, point.copy(), p, counts, FB).fill([out], 0, n, settings)
        keepalive = keepalive_schedule(counts[None, :], FB.keepalive_minutes)[0]
        tail = slice(first + 100, n)  # once 30 minutes are scored
        if expect_keepalive:
            assert np.array_equal(out[tail], keepalive[tail])
        else:
            assert not np.array_equal(out[tail], keepalive[tail])
            assert out[tail].sum() < keepalive[tail].sum()  # the right forecast keeps warm only before requests
