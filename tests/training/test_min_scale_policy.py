"""The policy the scale function runs and the backtest scores: pure rules, each pinned."""

from __future__ import annotations

from dataclasses import replace

from scale.min_scale_policy import MinuteForecast, PolicySettings, decide, desired_min_scale

S = PolicySettings(capacity_rps=10.0, cold_start_cost_pod_s=300.0, max_scale=5, cooldown_s=120)


def f(p_any: float, upper: float = 1.0) -> MinuteForecast:
    return MinuteForecast(point=upper / 2, upper=upper, p_any=p_any)


def test_warm_threshold_prices_a_cold_start_against_a_minute_of_pod():
    assert S.warm_threshold == 60 / 300
    assert desired_min_scale([f(0.1), f(0.1)], S) == 0  # P(any in both) = 0.19 < 0.2
    assert desired_min_scale([f(0.15), f(0.1)], S) == 1  # 0.235: the next minute counts too
    assert desired_min_scale([f(0.0), f(0.0), f(0.9)], S) == 0  # beyond the 2 covered minutes


def test_load_sets_replicas_from_the_upper_quantile_and_bounds_clamp():
    assert desired_min_scale([f(1.0, upper=60 * 25)], S) == 3  # 25 req/s over 10 per pod
    assert desired_min_scale([f(1.0, upper=60 * 1000)], S) == 5  # max_scale
    assert desired_min_scale([f(1.0, upper=float("inf"))], S) == 5  # never an overflow
    assert desired_min_scale([f(1.0, upper=1e308)], S) == 5
    floor = PolicySettings(min_scale=2)
    assert desired_min_scale([f(0.0)], floor) == 2


def test_raise_at_once_lower_only_after_cooldown():
    up = decide([f(0.9)], S, current=0, now_s=0, raised_at_s=None)
    assert up.min_scale == 1 and up.raised_at_s == 0
    held = decide([f(0.0)], S, current=1, now_s=60, raised_at_s=0)
    assert held.min_scale == 1 and "cool-down" in held.reason
    down = decide([f(0.0)], S, current=1, now_s=120, raised_at_s=0)
    assert down.min_scale == 0


def test_missing_or_stale_forecast_holds_and_never_lowers():
    for forecast, fresh in ((None, True), ([], True), ([f(0.0)], False)):
        d = decide(forecast, S, current=3, now_s=1000, raised_at_s=0, fresh=fresh)
        assert d.min_scale == 3 and d.window_s is None and "hold" in d.reason


def test_window_lever_only_when_idle_is_forecast():
    lever = replace(S, idle_window_s=6.0)
    idle = decide([f(0.01), f(0.02)], lever, current=0, now_s=0, raised_at_s=None)
    assert idle.window_s == 6.0
    maybe = decide([f(0.15), f(0.02)], lever, current=0, now_s=0, raised_at_s=None)
    assert maybe.min_scale == 0 and maybe.window_s is None  # not warm-worthy, not idle either
    busy = decide([f(0.9)], lever, current=0, now_s=0, raised_at_s=None)
    assert busy.window_s is None
    # The lever is opt-in: by default the window is never touched.
    assert decide([f(0.0)], PolicySettings(), current=0, now_s=0, raised_at_s=None).window_s is None
