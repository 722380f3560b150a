"""The policy the scale function runs and the backtest scores: pure rules, each pinned."""

from __future__ import annotations

import math
from dataclasses import replace

from scale.min_scale_policy import MinuteForecast, PolicySettings, decide, desired_min_scale, error_headroom, peak_second

S = PolicySettings(capacity_rps=10.0, cold_start_cost_pod_s=300.0, max_scale=5, cooldown_s=120)


def f(p_any: float, upper: float = 1.0) -> MinuteForecast:
    return MinuteForecast(point_rps=upper / 120, upper_rps=upper / 60, p_any=p_any)  # upper: requests in the minute


def test_warm_threshold_prices_a_cold_start_against_a_minute_of_pod():
    assert S.warm_threshold == 60 / 300
    assert desired_min_scale([f(0.1), f(0.1)], S) == 0  # P(any in both) = 0.19 < 0.2
    assert desired_min_scale([f(0.15), f(0.1)], S) == 1  # 0.235: the next minute counts too
    assert desired_min_scale([f(0.0), f(0.0), f(0.9)], S) == 0  # beyond the 2 covered minutes


def test_load_sets_replicas_from_the_upper_quantile_and_bounds_clamp():
    mean_only = replace(S, burst_risk=None)
    assert desired_min_scale([f(1.0, upper=60 * 25)], mean_only) == 3  # 25 req/s over 10 per pod
    assert desired_min_scale([f(1.0, upper=60 * 1000)], S) == 5  # max_scale
    assert desired_min_scale([MinuteForecast(1.0, float("inf"), 1.0)], S) == 5  # never an overflow
    assert desired_min_scale([f(1.0, upper=float("inf"))], S) == 5  # an infinite mean and upper too
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


def test_pods_cover_the_busiest_second_not_the_mean():
    # 5.4 req/s on average (one pod at 10 req/s) has, Poisson within the minute, a second of
    # 11 or more in most minutes: two pods. The peak is the smallest k with 60 * P(X > k) <= risk.
    rate, risk = 5.4, 0.1
    k = peak_second(rate, risk)
    tail = lambda k: 1 - sum(math.exp(-rate) * rate ** i / math.factorial(i) for i in range(int(k) + 1))
    assert 60 * tail(k) <= risk < 60 * tail(k - 1)
    assert desired_min_scale([f(1.0, upper=60 * rate)], replace(S, burst_risk=risk)) == 2
    assert desired_min_scale([f(1.0, upper=60 * rate)], replace(S, burst_risk=None)) == 1
    # A sparse service stays at one pod; a very busy one uses the normal approximation.
    assert desired_min_scale([f(1.0, upper=3.0)], S) == 1
    big = peak_second(2000.0, risk)
    assert 2000 + 2.5 * math.sqrt(2000) < big < 2000 + 3.5 * math.sqrt(2000)  # z(1 - 0.1/60) = 2.94
    assert peak_second(1.0, 0.5) <= peak_second(1.0, 0.01)  # less risk, more headroom


BIG = PolicySettings(capacity_rps=10.0, cold_start_cost_pod_s=300.0, max_scale=1000, burst_risk=None)


def test_every_covered_minute_sizes_pods_from_its_upper_quantile():
    # The forecaster bounds its mean (forecast/forecaster.mean_bound): a minute whose upper equals
    # its point is the recent level, not a run-away, and sizes pods like any other.
    level = MinuteForecast(point_rps=40.0, upper_rps=40.0, p_any=1.0)
    sane = MinuteForecast(point_rps=40.0, upper_rps=45.0, p_any=1.0)
    assert desired_min_scale([level], BIG) == 4
    assert desired_min_scale([level, sane], BIG) == 5  # the larger of the two covered minutes
    assert desired_min_scale([sane, MinuteForecast(0.0, 0.0, 1.0)], BIG) == 5


def test_headroom_sizes_from_the_point_times_the_services_own_error():
    # 70 req/s expected, upper quantile 130: the forecaster's upper asks 13 pods; a Service whose
    # load strayed at most 20% above its point forecast asks ceil(70 x 1.2 / 10) = 9.
    f70 = MinuteForecast(point_rps=70.0, upper_rps=130.0, p_any=1.0)
    assert desired_min_scale([f70], BIG) == 13
    assert desired_min_scale([f70], replace(BIG, headroom=1.2)) == 9
    # The busiest second of that rate still counts with burst_risk.
    assert desired_min_scale([f70], replace(BIG, headroom=1.2, burst_risk=0.1)) == math.ceil(peak_second(84.0, 0.1) / 10)


def test_error_headroom_is_the_quantile_of_actual_over_point():
    point = [10.0] * 10 + [0.0]
    actual = [float(x) for x in range(5, 15)] + [50.0]  # ratios 0.5 .. 1.4; the 0-forecast minute is left out
    assert error_headroom(actual, point, 0.0) == 0.5
    assert error_headroom(actual, point, 1.0) == 1.4
    assert math.isclose(error_headroom(actual, point, 0.9), 1.31)  # between 1.3 and 1.4, linearly
    assert error_headroom([3.0], [0.0], 0.9) is None
    assert error_headroom([], [], 0.9) is None


def test_the_busy_window_is_set_only_while_every_covered_minute_is_forecast_busy():
    """The busy-window lever: opt-in; a pod's worth of load with a request every covered minute
    sets the short window, a quiet or uncertain minute leaves the Service's own window."""
    from scale.min_scale_policy import LEAD_MINUTES, MinuteForecast, PolicySettings, decide
    busy = [MinuteForecast(point_rps=20.0, upper_rps=30.0, p_any=1.0)] * 5
    lever = PolicySettings(capacity_rps=10.0, max_scale=50, busy_window_s=15.0)
    assert decide(busy, lever, 0, 0.0, None).window_s == 15.0
    assert decide(busy, PolicySettings(capacity_rps=10.0, max_scale=50), 0, 0.0, None).window_s is None  # opt-in
    light = [MinuteForecast(point_rps=5.0, upper_rps=30.0, p_any=1.0)] * 5  # under 70% of a pod
    assert decide(light, lever, 0, 0.0, None).window_s is None
    unsure = list(busy)
    unsure[LEAD_MINUTES - 1] = MinuteForecast(point_rps=20.0, upper_rps=30.0, p_any=0.9)
    assert decide(unsure, lever, 0, 0.0, None).window_s is None
    assert decide(busy, lever, 0, 0.0, None, fresh=False).window_s is None  # no fresh forecast: hold, touch nothing


def test_the_busy_window_is_kept_through_a_cool_down_hold():
    """The hold is about min-scale; the window follows the load: a forecast that drops from 6 pods
    to 3 while still busy holds 6 pods in the cool-down and keeps the short window, and a quiet
    forecast in the cool-down gives the Service's own window back."""
    from scale.min_scale_policy import MinuteForecast, PolicySettings, decide
    lever = PolicySettings(capacity_rps=10.0, max_scale=50, cooldown_s=120, busy_window_s=15.0)
    high = decide([MinuteForecast(40.0, 55.0, 1.0)] * 5, lever, 0, 0.0, None)
    lower = decide([MinuteForecast(20.0, 25.0, 1.0)] * 5, lever, high.min_scale, 60.0, high.raised_at_s)
    assert lower.min_scale == high.min_scale and "cool-down" in lower.reason and lower.window_s == 15.0
    quiet = decide([MinuteForecast(1.0, 3.0, 0.9)] * 5, lever, high.min_scale, 60.0, high.raised_at_s)
    assert quiet.min_scale == high.min_scale and "cool-down" in quiet.reason and quiet.window_s is None


def test_the_busy_window_also_follows_a_busy_last_observed_minute():
    """The start of an active period: the forecast does not call it busy yet (its point lags, its
    P(any) is under 0.99), but the minute just observed carried a pod's worth of load (70% of a
    pod's rate): the lever shortens the window a minute in. A lighter or unobserved last minute
    leaves the Service's own window, and the lever stays opt-in."""
    from scale.min_scale_policy import busy_trigger
    lever = PolicySettings(capacity_rps=10.0, max_scale=50, busy_window_s=15.0)
    starting = [MinuteForecast(point_rps=3.0, upper_rps=12.0, p_any=0.95)] * 5
    assert not busy_trigger(starting[:2], lever, None)
    assert busy_trigger(starting[:2], lever, 7.0)  # 420 requests in the last minute
    assert not busy_trigger(starting[:2], lever, 6.9)
    assert not busy_trigger([], lever, 20.0)  # nothing covered: nothing decided
    assert decide(starting, lever, 0, 0.0, None, last_rps=7.0).window_s == 15.0
    assert decide(starting, lever, 0, 0.0, None, last_rps=6.9).window_s is None
    assert decide(starting, lever, 0, 0.0, None).window_s is None
    assert decide(starting, replace(lever, busy_window_s=None), 0, 0.0, None, last_rps=50.0).window_s is None  # opt-in
    assert decide(starting, lever, 0, 0.0, None, fresh=False, last_rps=50.0).window_s is None  # stale: hold, touch nothing
    busy = [MinuteForecast(point_rps=20.0, upper_rps=30.0, p_any=1.0)] * 5
    assert decide(busy, lever, 0, 0.0, None, last_rps=0.0).window_s == 15.0  # the forecast trigger alone suffices
    held = decide(starting, replace(lever, cooldown_s=120), 9, 60.0, 0.0, last_rps=8.0)
    assert "cool-down" in held.reason and held.min_scale == 9 and held.window_s == 15.0  # kept through the hold
