"""Each KPA rule pinned to what Knative's code does (see training/kpa_model.py for the citations)."""

from __future__ import annotations

import numpy as np

from training.kpa_model import KpaConfig, KpaState, kpa_tick
from training.simulator import Control, KpaOnly, SimConfig, simulate

CFG = KpaConfig(target_rps=10.0)  # target value 10 * 70% = 7 req/s per pod


def tick(state, now, stable, panic, ready, **kw):
    return kpa_tick(state, CFG, now, stable, panic, ready, panic / 10.0, **kw)


def test_desired_is_ceil_of_observed_over_target_times_utilization():
    assert tick(KpaState(), 0, 7.0, 7.0, 1) == 1
    assert tick(KpaState(), 0, 7.1, 7.1, 1) == 2
    assert tick(KpaState(), 0, 70.0, 20.0, 10) == 10


def test_panic_at_twice_the_ready_pods_and_no_scale_down_while_in_panic():
    state = KpaState()
    assert tick(state, 0, 1.0, 7.0, 1) == 1 and not state.in_panic  # ceil(7/7)/1 = 1 < 2
    assert tick(state, 2, 1.0, 7.1, 1) == 2 and state.in_panic  # ceil(7.1/7)/1 = 2 >= 200%
    assert tick(state, 4, 0.5, 0.5, 2) == 2 and state.in_panic  # held: never down in panic
    assert tick(state, 59, 0.5, 0.5, 2) == 2  # still within a stable window of the last panic (t=2)
    assert tick(state, 2 + 60, 0.5, 0.5, 2) == 1 and not state.in_panic  # a window later: out


def test_scale_down_is_at_most_halving_per_tick():
    assert tick(KpaState(), 0, 0.0, 0.0, 8) == 4
    assert tick(KpaState(), 0, 0.0, 0.0, 3) == 1


def test_scale_up_is_bounded_by_the_rate_limit():
    cfg = KpaConfig(target_rps=10.0, max_scale_up_rate=2.0)
    assert kpa_tick(KpaState(), cfg, 0, 700.0, 700.0, 2, 70.0) == 4


def test_min_and_max_scale_clamp():
    assert tick(KpaState(), 0, 0.0, 0.0, 0, min_scale=2) == 2
    assert tick(KpaState(), 0, 100.0, 100.0, 10, max_scale=3) == 3


def lone_request_pod_seconds(kpa: KpaConfig) -> float:
    arrivals = np.zeros(400, dtype=np.int64)
    arrivals[10] = 1
    result = simulate(arrivals, KpaOnly(), SimConfig(capacity_rps=10.0, cold_start_s=2.0, kpa=kpa))
    assert result.requests == 1 and result.cold_start_requests == 1
    return result.pod_seconds


def test_lone_request_pod_leaves_about_60s_after_it_via_the_fast_path():
    """Default target-burst-capacity 211: a one-pod service keeps the activator in the path,
    so handleScaleToZero scales to zero as soon as the 60 s stable average is 0."""
    assert 59 <= lone_request_pod_seconds(KpaConfig(target_rps=10.0)) <= 64


def test_lone_request_pod_leaves_about_90s_after_it_when_the_activator_was_not_in_path():
    """target-burst-capacity 0 takes the activator out of the path once a pod is ready: the
    scaler must then wait the 30 s scale-to-zero grace period after the window empties."""
    assert 89 <= lone_request_pod_seconds(KpaConfig(target_rps=10.0, target_burst_capacity=0)) <= 94


def test_shorter_window_lets_the_pod_leave_sooner():
    class ShortWindow:
        def control(self, minute, counts):
            return Control(window_s=6)

    arrivals = np.zeros(400, dtype=np.int64)
    arrivals[10] = 1
    result = simulate(arrivals, ShortWindow(), SimConfig(capacity_rps=10.0, cold_start_s=2.0))
    assert result.pod_seconds <= 10


def test_min_scale_raised_ahead_removes_the_cold_start():
    class WarmFromMinuteOne:
        def control(self, minute, counts):
            return Control(min_scale=1 if minute >= 1 else 0)

    arrivals = np.zeros(300, dtype=np.int64)
    arrivals[150] = 3
    cold = simulate(arrivals, KpaOnly(), SimConfig(cold_start_s=5.0))
    warm = simulate(arrivals, WarmFromMinuteOne(), SimConfig(cold_start_s=5.0))
    assert cold.cold_start_requests == 3 and warm.cold_start_requests == 0
    assert cold.latency_quantile(0.5) >= 4 and warm.latency_quantile(0.99) == 0


def test_burst_over_ready_capacity_is_counted_as_over_capacity_not_cold():
    class OnePod:
        def control(self, minute, counts):
            return Control(min_scale=1)

    arrivals = np.zeros(120, dtype=np.int64)
    arrivals[70] = 40  # one pod serves 10 per second
    result = simulate(arrivals, OnePod(), SimConfig(capacity_rps=10.0, cold_start_s=5.0))
    assert result.cold_start_requests == 0
    assert result.over_capacity_requests == 30


def test_simulation_is_deterministic_for_a_seed():
    from training.simulator import spread_minutes

    counts = np.array([0, 5, 0, 0, 12, 1, 0, 0, 0, 30])
    a, b = spread_minutes(counts, 7), spread_minutes(counts, 7)
    assert np.array_equal(a, b) and a.sum() == counts.sum()
    assert np.array_equal(np.add.reduceat(a, np.arange(0, len(a), 60)), counts)
    r1, r2 = (simulate(x, KpaOnly(), SimConfig()) for x in (a, b))
    assert (r1.pod_seconds, r1.cold_start_requests) == (r2.pod_seconds, r2.cold_start_requests)
