"""The fleet simulator on fleets small enough to score by hand, and against the single-trace
simulator and the KPA rules it vectorises."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from training.controllers import KeepAlive
from training.fleet_sim import FleetSimConfig, LaneState, PoolModelCache, kpa_constants, kpa_tick_lane, simulate_lanes
from training.kpa_model import KpaConfig, KpaState, kpa_tick
from training.simulator import Control, KpaOnly, SimConfig, simulate, spread_minutes

CONFIG = FleetSimConfig(capacity_rps=10.0, cold_start_s=5)


def run(arrivals: np.ndarray, stream_of_lane, schedule, record=()):
    seconds = arrivals.shape[1]
    return simulate_lanes(lambda day: arrivals[:, day * 86400:(day + 1) * 86400], np.array(stream_of_lane),
                          np.asarray(schedule, dtype=np.int64), CONFIG, seconds, record=record)


def hand_fleet():
    """Model a: one request at 100 s and one at 150 s; model b: one at 130 s. 10 minutes."""
    a = np.zeros((3, 600), np.int32)
    a[0, 100] = a[0, 150] = 1
    a[1, 130] = 1
    a[2] = a[0] + a[1]  # the pool: both models in one Service
    return a


def test_per_model_and_pooled_scores_known_by_hand():
    arrivals = hand_fleet()
    result = run(arrivals, [0, 1, 2], np.zeros((3, 10)), record=(2,))
    t = result.totals
    # a: cold at 100 (pod ready at 105), warm at 150; its pod goes once the 60 s window since
    # 150 is empty, at the 2 s tick at 210: it existed 100..209 = 110 s.
    # b alone: cold at 130, pod 130..189 = 60 s. The pool: cold at 100 only, pod 100..209 = 110 s.
    assert t.requests.tolist() == [2, 1, 3]
    assert t.cold.tolist() == [1, 1, 1]
    assert t.pod_seconds.tolist() == [110, 60, 110]
    assert t.over.tolist() == [0, 0, 0]
    # wasted: every pod-second that served nothing; a cold request is served when the pod is
    # ready (a at 105, b alone at 135), a warm one in its second
    assert t.wasted_pod_seconds.tolist() == [110 - 2, 60 - 1, 110 - 3]
    ready = result.ready[2]
    assert ready[104] == 0 and ready[105] == 1 and ready[209] == 1 and ready[210] == 0


def test_pool_model_loads_and_lru_evictions_known_by_hand():
    arrivals = hand_fleet()
    result = run(arrivals, [2], np.zeros((1, 10)), record=(0,))
    ready = result.ready[0]
    members = arrivals[:2]

    def replay(models_per_pod):
        cache = PoolModelCache(models_per_pod)
        for m in range(10):
            r = ready[m * 60:(m + 1) * 60]
            counts = members[:, m * 60:(m + 1) * 60].sum(axis=1)
            cache.minute(int(r.min()), int(r.max()), {i: int(c) for i, c in enumerate(counts) if c})
        return cache.scores

    # Room for both: a loads (minute 1), b loads (minute 2), a at 150 is a hit.
    roomy = replay(2)
    assert (roomy.model_loads, roomy.evictions) == (2, 0)
    # One model per pod: minute 2 brings a (hit) and b (load, evicts a): 2 loads, 1 eviction.
    tight = replay(1)
    assert (tight.model_loads, tight.evictions) == (2, 1)
    # A new pod starts empty: after the pool went to zero every model loads again.
    cache = PoolModelCache(4)
    cache.minute(1, 1, {0: 1, 1: 1})
    cache.minute(0, 0, {})
    cache.minute(0, 1, {0: 3})
    assert cache.scores.model_loads == 3
    # Round robin: 3 requests of one model over 2 pods load it on both, once each.
    cache = PoolModelCache(4)
    cache.minute(2, 2, {5: 3})
    assert cache.scores.model_loads == 2


def test_min_scale_prewarms_and_capacity_is_per_pod():
    arrivals = np.zeros((1, 300), np.int32)
    arrivals[0, 100] = 1
    arrivals[0, 200] = 25  # one pod serves 10 in its second: 15 wait, over capacity
    schedule = np.array([[0, 1, 1, 1, 1]])  # min-scale 1 from minute 1, applied at 62 s
    t = run(arrivals, [0], schedule).totals
    assert t.cold.tolist() == [0]  # the pod was ready at 67 s
    assert t.over.tolist() == [15]
    kpa = run(arrivals, [0], np.zeros((1, 5))).totals
    # Knative alone: the pod of 100 s left at 160 s, so all 25 of 200 s are cold, not over capacity
    assert kpa.cold.tolist() == [26] and kpa.over.tolist() == [0]


def test_agrees_with_the_single_trace_simulator():
    rng = np.random.default_rng(3)
    counts = np.zeros(1440)
    for start in rng.choice(np.arange(10, 1430), size=40, replace=False):
        counts[start:start + rng.integers(1, 5)] = rng.integers(1, 200)
    arrivals = spread_minutes(counts, 0)
    keepalive = KeepAlive(5)
    schedule = np.array([np.zeros(1440, int), [keepalive.control(m, counts[:m]).min_scale for m in range(1440)]])
    fleet = run(arrivals[None, :].astype(np.int32), [0, 0], schedule).totals
    for lane, controller in enumerate((KpaOnly(), KeepAlive(5))):
        single = simulate(arrivals, controller, SimConfig(), counts)
        assert fleet.requests[lane] == single.requests
        assert fleet.cold[lane] == single.cold_start_requests
        assert abs(fleet.over[lane] - single.over_capacity_requests) <= max(2, 0.05 * single.over_capacity_requests)
        # the fleet simulator ticks every lane at a fixed 2 s phase, as Knative's decider does;
        # the single-trace one restarts its tick at each arrival after idle: pod-seconds within 1%
        assert abs(fleet.pod_seconds[lane] - single.pod_seconds) <= 0.01 * single.pod_seconds


def test_compiled_kpa_tick_follows_kpa_tick_rule_by_rule():
    rng = np.random.default_rng(0)
    for cfg in (KpaConfig(target_rps=10.0), KpaConfig(target_rps=10.0, target_burst_capacity=0.0),
                KpaConfig(target_rps=10.0, target_burst_capacity=-1.0)):
        k = kpa_constants(cfg)
        lanes = 40
        scalar = [KpaState() for _ in range(lanes)]
        state = LaneState.zeros(lanes)
        ready = rng.integers(0, 6, lanes)
        panicked = graced = 0
        for step in range(300):
            now = 2.0 * step
            stable = rng.choice([0.0, 0.5, 3.0, 7.0, 20.0, 70.0], lanes)
            panic = stable * rng.choice([0.0, 1.0, 3.0], lanes)
            min_scale = rng.choice([0, 0, 1, 3], lanes)
            idx = np.flatnonzero(rng.random(lanes) < 0.7)
            got = [kpa_tick_lane(state.desired, state.in_panic, state.panic_since, state.max_panic_pods,
                                 state.zero_wanted_since, int(i), k, now, float(stable[i]), float(panic[i]), int(ready[i]),
                                 float(panic[i]) / 10.0, int(min_scale[i]), 8) for i in idx]
            want = [kpa_tick(scalar[i], cfg, now, stable[i], panic[i], int(ready[i]), panic[i] / 10.0,
                             min_scale=int(min_scale[i]), max_scale=8) for i in idx]
            assert got == want
            assert state.in_panic[idx].tolist() == [scalar[i].in_panic for i in idx]
            assert state.max_panic_pods[idx].tolist() == [scalar[i].max_panic_pods for i in idx]
            assert [None if np.isnan(state.zero_wanted_since[i]) else state.zero_wanted_since[i] for i in idx] == \
                [scalar[i].zero_wanted_since for i in idx]
            panicked += int(state.in_panic.sum())
            graced += int((~np.isnan(state.zero_wanted_since)).sum())
            ready[idx] = np.maximum(0, np.array(got) - rng.integers(0, 2, len(idx)))  # some pods still pending
        assert panicked > 0  # the panic rules were exercised, not only the stable ones
        if cfg.target_burst_capacity == 0.0:
            assert graced > 0  # and the scale-to-zero grace where the activator leaves the path


class _ReferenceCache:
    """PoolModelCache's rule spelled out one request at a time (an OrderedDict per pod, the most
    recently used last): the readable specification the vectorised cache must equal."""

    def __init__(self, models_per_pod: int):
        self.cap, self.pods, self.pointer, self.waiting = models_per_pod, [], 0, {}
        self.loads = self.evictions = 0

    def minute(self, fewest: int, most: int, requests: dict[int, int], scored: bool) -> None:
        from collections import OrderedDict

        del self.pods[fewest:]
        while len(self.pods) < most:
            self.pods.append(OrderedDict())
        if most == 0:
            for m, c in requests.items():
                self.waiting[m] = self.waiting.get(m, 0) + c
            return
        merged = dict(self.waiting)
        for m, c in requests.items():
            merged[m] = merged.get(m, 0) + c
        self.waiting = {}
        for m, c in merged.items():
            for _ in range(min(c, most)):
                pod = self.pods[self.pointer % most]
                self.pointer += 1
                if m in pod:
                    pod.move_to_end(m)
                    continue
                pod[m] = True
                self.loads += scored
                if len(pod) > self.cap:
                    pod.popitem(last=False)
                    self.evictions += scored


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 4), st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5),
                                             st.dictionaries(st.integers(0, 7), st.integers(1, 9), max_size=6),
                                             st.booleans()), max_size=25))
def test_the_vectorised_pool_cache_equals_the_request_by_request_rule(cap, minutes):
    fast, spec = PoolModelCache(cap), _ReferenceCache(cap)
    for a, b, requests, scored in minutes:
        fewest, most = min(a, b), max(a, b)
        fast.minute(fewest, most, dict(requests), scored)
        spec.minute(fewest, most, dict(requests), scored)
        assert (fast.scores.model_loads, fast.scores.evictions) == (spec.loads, spec.evictions)
        held = [{m for m in range(fast.last.shape[1]) if fast.last[p, m]} for p in range(fast.n_pods)]
        assert held == [set(pod) for pod in spec.pods[:fast.n_pods]]


def test_the_retention_keeps_the_last_pod_after_the_zero_decision_as_knative_does():
    """scale-to-zero-pod-retention-period, as knative/serving's kpa scaler applies it: the last
    pod stays until the PodAutoscaler has been inactive for max(grace, retention); it overlaps
    the 30 s grace, it does not add to it. A request inside the retention meets a warm pod."""
    seconds = 1200
    arrivals = np.zeros((1, seconds), np.int64)
    arrivals[0, 100] = 1
    arrivals[0, 400] = 1  # 300 s after the first: past Knative's own ~90 s, within a 6-minute retention
    schedule = np.zeros((2, seconds // 60), np.int64)
    retention = np.zeros_like(schedule)
    retention[1] = 360
    run = simulate_lanes(lambda day: arrivals, np.array([0, 0]), schedule, FleetSimConfig(), seconds, retention=retention)
    plain, kept = run.totals.pod_seconds
    assert run.totals.cold[0] == 2 and run.totals.cold[1] == 1  # the second request is warm only with it
    # without: a pod from each request to ~90 s after it (window + grace); with: from the first
    # request until 360 s after the zero decision that follows the second (window, then retention)
    assert 360 - 30 - 4 <= kept - plain - (400 - 100 - 90 - 5) <= 360 - 30 + 4 + 90, (plain, kept)
    # with the activator already in the path (a pod's capacity under the target burst capacity:
    # Knative's defaults here) there is no grace to overlap: a short retention adds itself to each
    # scale to zero (two here)
    short = np.zeros_like(schedule)
    short[1] = 20
    run = simulate_lanes(lambda day: arrivals, np.array([0, 0]), schedule, FleetSimConfig(), seconds, retention=short)
    assert abs(int(run.totals.pod_seconds[1] - run.totals.pod_seconds[0]) - 2 * 20) <= 4


class Windows:
    """A controller that sets a stable window on some minutes (the busy-window lever's output)."""

    def __init__(self, windows: np.ndarray, min_scale: np.ndarray | None = None):
        self.windows, self.min_scale = windows, min_scale

    def control(self, minute: int, counts: np.ndarray) -> Control:
        w = int(self.windows[minute])
        return Control(0 if self.min_scale is None else int(self.min_scale[minute]), float(w) if w else None)


def test_a_window_schedule_agrees_with_the_single_trace_simulator():
    rng = np.random.default_rng(5)
    counts = np.zeros(720)
    for start in rng.choice(np.arange(10, 700), size=30, replace=False):
        counts[start:start + rng.integers(2, 15)] = rng.integers(200, 3000)
    arrivals = spread_minutes(counts, 1)
    windows = np.where(counts > 1000, 15, 0)  # a short window on the busiest minutes only
    fleet = simulate_lanes(lambda day: arrivals[None, :].astype(np.int32), np.array([0, 0]),
                           np.zeros((2, 720), np.int64), CONFIG, len(arrivals),
                           window=np.array([np.zeros(720, np.int64), windows])).totals
    for lane, controller in enumerate((KpaOnly(), Windows(windows))):
        single = simulate(arrivals, controller, SimConfig(), counts)
        assert fleet.requests[lane] == single.requests
        assert fleet.cold[lane] == single.cold_start_requests
        assert abs(fleet.over[lane] - single.over_capacity_requests) <= max(5, 0.05 * single.over_capacity_requests)
        assert abs(fleet.pod_seconds[lane] - single.pod_seconds) <= 0.01 * single.pod_seconds
    assert fleet.pod_seconds[1] != fleet.pod_seconds[0]  # the window changed what Knative did


def test_a_longer_window_averages_only_what_the_shorter_held():
    """Knative's ResizeWindow (knative/serving pkg/autoscaler/aggregation/bucketing.go): going from
    15 s back to 60 s keeps the 15 s of data, so the average does not jump back to the full
    minute's: after a load ends under a 15 s window, the pods go as they would under 15 s."""
    arrivals = np.zeros(600, np.int64)
    arrivals[:290] = 70  # 10 pods' worth at the 70% target, then nothing
    counts = np.add.reduceat(arrivals, np.arange(0, 600, 60))
    short_then_default = np.array([15] * 5 + [0] * 5)
    runs = {name: simulate(arrivals, controller, SimConfig(), counts) for name, controller in
            (("60 s", KpaOnly()), ("15 s", Windows(np.full(10, 15))), ("15 s then 60 s", Windows(short_then_default)))}
    pods_after = {name: r.pods_per_minute[5] for name, r in runs.items()}
    assert pods_after["15 s"] < 0.5 * pods_after["60 s"]
    assert pods_after["15 s then 60 s"] < 0.5 * pods_after["60 s"]
    fleet = simulate_lanes(lambda day: arrivals[None, :].astype(np.int32), np.array([0, 0, 0]), np.zeros((3, 10), np.int64),
                           CONFIG, 600, window=np.array([np.zeros(10, np.int64), np.full(10, 15), short_then_default])).totals
    for lane, name in enumerate(runs):
        assert abs(fleet.pod_seconds[lane] - runs[name].pod_seconds) <= 0.02 * runs[name].pod_seconds, name
