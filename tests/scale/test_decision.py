"""scale.decision.plan: the whole per-service decision, pure, as the function and the backtest call it."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from scale.annotations import ServicePolicy
from scale.decision import MANAGED, MIN_SCALE, WINDOW, ServiceView, plan
from scale.min_scale_policy import MinuteForecast, PolicySettings, decide
from training.controllers import ForecastTable, PolicyController

S = PolicySettings(capacity_rps=10.0, cold_start_cost_pod_s=300.0, max_scale=5, cooldown_s=120, burst_risk=None)
POLICY = ServicePolicy(S, dry_run=False, user_window=None, may_set_window=True)


def f(p_any: float, upper_rps: float = 1.0) -> MinuteForecast:
    return MinuteForecast(point_rps=upper_rps / 2, upper_rps=upper_rps, p_any=p_any)


def test_current_is_what_the_routed_revisions_carry_and_only_differences_are_written():
    view = ServiceView(["a", "b"], {"a": {MIN_SCALE: "2"}, "b": {MIN_SCALE: "3", MANAGED: "3"}})
    p = plan(view, POLICY, [f(0.99, 25)] * 5, 0.0, None)
    assert p.previous == 3 and p.min_scale == 3
    assert p.writes == {"a": {MIN_SCALE: "3", MANAGED: "3"}}  # b carries the decision already
    assert not p.warm_up


def test_holding_never_rewrites_the_min_scale_and_says_why():
    view = ServiceView(["a"], {"a": {MIN_SCALE: "2", MANAGED: "2"}})
    p = plan(view, POLICY, None, 0.0, None, missing="forecast function had no data (stale)")
    assert p.min_scale == 2 and p.writes == {} and p.reason == "hold at 2: forecast function had no data (stale)"
    p = plan(view, POLICY, [f(0.0, 0)] * 5, 0.0, None, stale_age_s=400)
    assert p.min_scale == 2 and p.writes == {} and "400 s old" in p.reason


def test_lost_state_holds_a_cooldown_only_over_our_own_min_scale():
    ours = ServiceView(["a"], {"a": {MIN_SCALE: "2", MANAGED: "2"}})
    assert plan(ours, POLICY, [f(0.0, 0)] * 5, 1000.0, None, state_lost=True).min_scale == 2
    theirs = ServiceView(["a"], {"a": {MIN_SCALE: "2"}})  # set by someone else: corrected at once
    assert plan(theirs, POLICY, [f(0.0, 0)] * 5, 1000.0, None, state_lost=True).min_scale == 0


def test_raising_from_zero_asks_for_a_warm_up_and_leaving_traffic_gives_values_back():
    view = ServiceView(["new"], {"new": {}, "old": {MIN_SCALE: "2", MANAGED: "2", WINDOW: "6s"}},
                       template={MIN_SCALE: "0"})
    p = plan(view, POLICY, [f(0.99, 5)] * 5, 0.0, None)
    assert p.warm_up and p.writes["new"][MIN_SCALE] == "1"
    assert p.releases == {"old": {MIN_SCALE: "0", WINDOW: None, MANAGED: None}}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 80)), min_size=5, max_size=40), st.booleans())
def test_the_backtest_scores_exactly_what_decide_alone_would(steps, lever):
    """PolicyController goes through plan(); its decisions equal the bare policy's, minute by minute."""
    settings_ = PolicySettings(capacity_rps=10.0, cooldown_s=120, idle_window_s=6.0 if lever else None)
    n = len(steps)
    p_any = np.array([[p] * 5 for p, _ in steps])
    upper = np.array([[u * 60] * 5 for _, u in steps])
    controller = PolicyController(ForecastTable(0, upper / 2, upper, p_any), settings_)
    current, raised = 0, None
    for minute in range(n):
        forecast = [MinuteForecast(point_rps=upper[minute, h] / 120, upper_rps=upper[minute, h] / 60, p_any=p_any[minute, h])
                    for h in range(5)]
        expected = decide(forecast, settings_, current, minute * 60.0, raised)
        got = controller.control(minute, np.zeros(n))
        assert (got.min_scale, got.window_s) == (expected.min_scale, expected.window_s)
        current, raised = expected.min_scale, expected.raised_at_s
