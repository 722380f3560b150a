"""Trace-driven simulation of one Knative Service at 1-second resolution, deterministic for a seed.

Arrivals come from a trace: 60 s bins are spread over their minute by a seeded Poisson process
(given n arrivals in a minute, a Poisson process places them uniformly), 1 s bins are used as
they are. Pods have a capacity in requests/s and become ready `cold_start_s` after they are
started (pod start plus the infer server's process start). Knative's KPA (kpa_model.py) decides
every 2 s; while no pod is ready the activator buffers requests and pokes the autoscaler at
once. A controller (our policy or a baseline) sets min-scale and optionally the stable window
once a minute, `actuation_delay_s` after the minute starts (PingSource -> forecast -> scale).

A window change takes effect as Knative applies it: the annotation reaches the PodAutoscaler's
Metric, and the autoscaler resizes the running Revision's stable and panic windows in place
(knative/serving pkg/autoscaler/metrics/collector.go `updateMetric` -> `ResizeWindow`). A
shorter window averages its own, newest seconds at once; a longer one keeps only the data the
shorter held (pkg/autoscaler/aggregation/bucketing.go `ResizeWindow` sets `firstWrite` there),
and `WindowAverage` averages over that partial span until the new window has filled.

Scored per request: cold start (arrived while no pod was ready), over capacity (arrived while
pods were ready but was not served within its arrival second: scale-out lag), added latency
(seconds waited, at 1 s resolution); per second: pods existing (pending or ready) as
pod-seconds; and the number of changes of the applied pod count (scale actions).
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from training.kpa_model import KpaConfig, KpaState, kpa_tick, panic_window_s


@dataclass(frozen=True)
class Control:
    min_scale: int = 0
    window_s: float | None = None
    """Stable window to set on the Revision (second lever); None keeps the Service's default."""


class Controller(Protocol):
    def control(self, minute: int, counts: np.ndarray) -> Control:
        """Decide at the start of `minute` from the per-minute counts of minutes < `minute`."""


class KpaOnly:
    def control(self, minute: int, counts: np.ndarray) -> Control:
        return Control()


@dataclass(frozen=True)
class SimConfig:
    capacity_rps: float = 10.0
    cold_start_s: float = 5.0
    actuation_delay_s: int = 2
    seed: int = 0
    kpa: KpaConfig | None = None

    def kpa_config(self) -> KpaConfig:
        return self.kpa or KpaConfig(target_rps=self.capacity_rps)


@dataclass
class SimResult:
    requests: int
    cold_start_requests: int
    over_capacity_requests: int
    pod_seconds: float
    scale_actions: int
    latency_counts: Counter = field(repr=False)
    pods_per_minute: np.ndarray = field(repr=False)
    min_scale_per_minute: np.ndarray = field(repr=False)

    def latency_quantile(self, q: float) -> float:
        total = sum(self.latency_counts.values())
        if total == 0:
            return 0.0
        seen = 0
        for value in sorted(self.latency_counts):
            seen += self.latency_counts[value]
            if seen >= q * total:
                return float(value)
        return float(max(self.latency_counts))


def spread_minutes(counts: np.ndarray, seed: int) -> np.ndarray:
    """Per-second arrivals from per-minute counts: each minute's n arrivals uniform in it."""
    rng = np.random.default_rng(seed)
    counts = np.nan_to_num(np.asarray(counts, dtype=float)).astype(np.int64)
    total = int(counts.sum())
    minute_of_arrival = np.repeat(np.arange(len(counts)), counts)
    seconds = minute_of_arrival * 60 + rng.integers(0, 60, size=total)
    return np.bincount(seconds, minlength=len(counts) * 60).astype(np.int64)


def simulate(
    arrivals: np.ndarray,
    controller: Controller,
    config: SimConfig,
    minute_counts: np.ndarray | None = None,
    scored: np.ndarray | None = None,
) -> SimResult:
    """Run the service over per-second `arrivals`; `scored` (per second, bool) masks warm-up
    and trace gaps out of the scores while the simulation itself runs through them."""
    kpa = config.kpa_config()
    n = len(arrivals)
    minutes = (n + 59) // 60
    if minute_counts is None:
        minute_counts = np.add.reduceat(arrivals, np.arange(0, n, 60)) if n else np.zeros(0)
    scored = np.ones(n, dtype=bool) if scored is None else scored
    prefix = np.concatenate(([0], np.cumsum(arrivals)))
    next_arrival_at = _next_nonzero_index(arrivals)

    state = KpaState()
    pods: list[float] = []  # ready-at times, oldest first
    control = Control()
    queue: deque = deque()  # [arrival second, count, cold, scored]
    latency: Counter = Counter()
    requests = cold = over = actions = 0
    pod_seconds = 0.0
    applied = 0
    pods_per_minute = np.zeros(minutes)
    min_scale_per_minute = np.zeros(minutes)
    capacity = config.capacity_rps
    next_tick = 0.0
    # The stable window in force and how much of it holds data (Knative's ResizeWindow, `resize`).
    window_now = kpa.stable_window_s
    spans = (window_now, panic_window_s(kpa, window_now))
    resized_at = 0.0

    def window_rate(end: int, width: float) -> float:
        w = max(1, int(round(width)))
        start = max(0, end + 1 - w)
        return (prefix[end + 1] - prefix[start]) / w

    def ready_count(now: float) -> int:
        return sum(1 for t in pods if t <= now)

    def apply(desired: int, now: float) -> None:
        nonlocal applied, actions
        if desired > len(pods):
            pods.extend([now + config.cold_start_s] * (desired - len(pods)))
        elif desired < len(pods):
            pending = [t for t in pods if t > now]
            ready = [t for t in pods if t <= now]
            drop = len(pods) - desired
            drop_pending = min(drop, len(pending))
            pending = pending[: len(pending) - drop_pending]
            ready = ready[: len(ready) - (drop - drop_pending)]
            pods[:] = ready + pending
        if desired != applied:
            actions += 1
            applied = desired

    def widths(now: float) -> tuple[float, float]:
        held = now - resized_at
        return (min(window_now, spans[0] + held), min(panic_window_s(kpa, window_now), spans[1] + held))

    def resize(window: float, now: float) -> None:
        nonlocal window_now, spans, resized_at
        if window == window_now:
            return
        stable_w, panic_w = widths(now)
        window_now, resized_at = window, now
        spans = (min(stable_w, window), min(panic_w, panic_window_s(kpa, window)))

    def decide(now: float, second: int) -> None:
        stable_w, panic_w = widths(now)
        stable = window_rate(second, stable_w)
        panic_rate = window_rate(second, panic_w)
        ready = ready_count(now)
        desired = kpa_tick(state, kpa, now, stable, panic_rate, ready, panic_rate / capacity,
                           min_scale=control.min_scale, stable_window_s=window_now)
        apply(desired, now)

    s = 0
    while s < n:
        minute, offset = divmod(s, 60)
        if offset == config.actuation_delay_s or (offset == 0 and config.actuation_delay_s >= 60):
            control = controller.control(minute, minute_counts[:minute])
            resize(control.window_s or kpa.stable_window_s, float(s))
            if control.min_scale > len(pods):
                apply(max(control.min_scale, state.desired), float(s))
                state.desired = len(pods)
        # Fast-forward through idle stretches: nothing exists and nothing arrives.
        if not pods and not queue and control.min_scale == 0 and arrivals[s] == 0:
            next_arrival = int(next_arrival_at[s])
            next_control = (minute + (1 if offset >= config.actuation_delay_s else 0)) * 60 + config.actuation_delay_s
            s = min(next_arrival, next_control, n)
            next_tick = float(s)
            continue
        now = float(s)
        a = int(arrivals[s])
        if a and ready_count(now) == 0 and not pods:
            decide(now, s)  # the activator's poke: scale from zero at once
            next_tick = now + kpa.tick_s
        if now >= next_tick:
            decide(now, s)
            next_tick = now + kpa.tick_s
        ready = ready_count(now)
        if a:
            queue.append([s, a, ready == 0, bool(scored[s])])
            if scored[s]:
                requests += a
                if ready == 0:
                    cold += a
        budget = ready * capacity
        while queue and budget >= 1:
            entry = queue[0]
            take = int(min(entry[1], budget))
            if take <= 0:
                break
            if entry[3]:
                wait = s - entry[0]
                latency[wait] += take
                if wait >= 1 and not entry[2]:
                    over += take
            entry[1] -= take
            budget -= take
            if entry[1] == 0:
                queue.popleft()
        if scored[s]:
            pod_seconds += len(pods)
        pods_per_minute[minute] += len(pods) / 60.0
        min_scale_per_minute[minute] = control.min_scale
        s += 1
    return SimResult(requests, cold, over, pod_seconds, actions, latency, pods_per_minute, min_scale_per_minute)


def _next_nonzero_index(arrivals: np.ndarray) -> np.ndarray:
    """For each second, the first second at or after it with an arrival (len if none)."""
    n = len(arrivals)
    index = np.where(arrivals > 0, np.arange(n), n)
    return np.minimum.accumulate(index[::-1])[::-1] if n else index
