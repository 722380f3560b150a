"""The sizing study scores what the scale function does: the busy-window lever's window comes
from the policy's own trigger, and the per-Service error-headroom schedules are the policy's
decisions minute by minute."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from scale.min_scale_policy import PolicySettings
from studies.sizing_study import busy_windows, rolling_error_headroom, schedules
from training.fleet_backtest import Forecasts, PolicySchedule

S = PolicySettings(capacity_rps=10.0, cold_start_cost_pod_s=300.0, max_scale=50)


def test_the_busy_window_follows_the_last_observed_minute_as_well_as_the_forecast():
    n = 6
    point = np.full((1, n, 2), 180.0)  # 3 req/s forecast: never busy by the forecast alone
    point[0, 4:] = 1200.0  # 20 req/s from minute 4: busy by the forecast
    fc = Forecasts(point, point * 1.5, np.full((1, n, 2), 1.0))
    counts = np.array([[0.0, 600.0, 100.0, 0.0, 0.0, 0.0]])  # minute 1 carried 10 req/s
    lever = replace(S, busy_window_s=15.0)
    seen = busy_windows(fc, np.array([0]), lever, n, counts)
    assert seen[0].tolist() == [0, 0, 15, 0, 15, 15]  # the minute after the busy one, and the forecast's
    assert busy_windows(fc, np.array([0]), lever, n, None)[0].tolist() == [0, 0, 0, 0, 15, 15]
    assert not busy_windows(fc, np.array([0]), S, n, counts).any()  # the lever off: never


def test_error_headroom_schedules_decide_as_one_call_per_minute_on_the_whole_series():
    rng = np.random.default_rng(3)
    n = 400
    counts = rng.poisson(rng.uniform(50, 900, n)).astype(float)[None, :]
    point = np.repeat((counts[0] * rng.uniform(0.6, 1.3, n))[None, :, None], 2, axis=2)
    fc = Forecasts(point, point * 1.4, np.full_like(point, 0.999))
    got = schedules(fc, np.array([0]), S, n, counts, 0.9)
    heads = rolling_error_headroom(counts[0], point[0, :, 0], point[0, :, 0] * 1.4, 0.9)
    whole = PolicySchedule(point[0], point[0] * 1.4, np.full_like(point[0], 0.999))
    expected = np.zeros(n, np.int64)
    for m in range(n):
        h = heads[m]
        whole.fill([expected], m, m + 1, [S if np.isnan(h) else replace(S, headroom=float(h))])
    assert np.array_equal(got[0], expected)
    assert len(set(expected.tolist())) > 3  # the headroom and the load move the decisions
