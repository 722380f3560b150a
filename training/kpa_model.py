"""Knative's Pod Autoscaler (KPA) decision rules, as pure functions over a small state.

Each rule cites where Knative implements it (knative/serving, pkg/ paths):
- the 2 s tick: `autoscaler/scaling/multiscaler.go` (tickInterval = 2 * time.Second);
- stable and panic windows are averages of the observed metric over the last 60 s and
  60 s * 10% = 6 s: `autoscaler/config/config.go` (StableWindow 60s, PanicWindowPercentage 10)
  and `autoscaler/aggregation/bucketing.go` (WindowAverage);
- desired pods = ceil(observed / (target * utilization)):
  `autoscaler/scaling/autoscaler.go` Scale() with TargetValue = target * 70%
  (`container-concurrency-target-percentage`, config.go);
- scale-up and scale-down rate limits: maxScaleUp = ceil(1000 * ready), maxScaleDown =
  floor(ready / 2): autoscaler.go Scale() with MaxScaleUpRate 1000, MaxScaleDownRate 2;
- panic when desiredPanic / ready >= 200% (PanicThresholdPercentage 200); in panic the
  desired count never falls; panic ends after a stable window without the condition:
  autoscaler.go Scale();
- scale to zero (`reconciler/autoscaling/kpa/scaler.go` handleScaleToZero): once the stable
  average is 0, a revision whose activator is already in the request path (its excess burst
  capacity is negative, which with the default target-burst-capacity of 211 holds for a service
  of one or two pods, `autoscaler/scaling/autoscaler.go` excessBCF) goes to zero at once, so its
  last pod leaves about one stable window (60 s) after the last request; otherwise the
  activator is put in the path first and the pods go after the scale-to-zero grace period
  (30 s, config.go ScaleToZeroGracePeriod): about 90 s;
- min-scale / max-scale clamp the desired count (scaler.go applyBounds); the window annotation
  `autoscaling.knative.dev/window` resizes the stable window live and the panic window with it
  (`autoscaler/metrics/collector.go` updateMetric -> ResizeWindow, `autoscaler/aggregation/
  bucketing.go`: a longer window first averages only the span the shorter one held; the
  simulator applies that, simulator.py `resize`).
The metric here is requests per second (`autoscaling.knative.dev/metric: rps`) with a per-pod
target equal to the pod's capacity, since the simulator's pods have a capacity in req/s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class KpaConfig:
    target_rps: float = 10.0
    """Per-pod target (autoscaling.knative.dev/target with metric rps)."""
    target_utilization: float = 0.70
    stable_window_s: float = 60.0
    panic_window_percentage: float = 10.0
    panic_threshold: float = 2.0
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0
    scale_to_zero_grace_s: float = 30.0
    tick_s: float = 2.0
    target_burst_capacity: float = 211.0
    """Default TBC; -1 keeps the activator always in the path, 0 takes it out when pods exist."""
    container_concurrency_target: float = 100.0
    """Per-pod concurrency capacity the activator-in-path test uses (the default target)."""


@dataclass
class KpaState:
    desired: int = 0
    in_panic: bool = False
    panic_since: float | None = None
    max_panic_pods: int = 0
    zero_wanted_since: float | None = None
    """When the stable average first hit 0 with the activator out of the path (grace timer)."""


def activator_in_path(config: KpaConfig, ready_pods: int, panic_concurrency: float) -> bool:
    """Excess burst capacity < 0 keeps the activator in the path (autoscaler.go)."""
    if config.target_burst_capacity < 0:
        return True
    if ready_pods == 0:
        return True
    excess = ready_pods * config.container_concurrency_target - config.target_burst_capacity - panic_concurrency
    return excess < 0


def kpa_tick(
    state: KpaState,
    config: KpaConfig,
    now: float,
    stable_rps: float,
    panic_rps: float,
    ready_pods: int,
    panic_concurrency: float,
    min_scale: int = 0,
    max_scale: int = 0,
    stable_window_s: float | None = None,
) -> int:
    """One 2 s autoscaler decision; returns the pod count the scaler applies, and updates state."""
    window = stable_window_s or config.stable_window_s
    target = config.target_rps * config.target_utilization
    desired_stable = math.ceil(stable_rps / target - 1e-9) if stable_rps > 0 else 0
    desired_panic = math.ceil(panic_rps / target - 1e-9) if panic_rps > 0 else 0

    if ready_pods > 0:
        max_up = math.ceil(config.max_scale_up_rate * ready_pods)
        max_down = math.floor(ready_pods / config.max_scale_down_rate)
        desired_stable = min(max(desired_stable, max_down), max_up)
        desired_panic = min(max(desired_panic, max_down), max_up)
        over_panic = desired_panic / ready_pods >= config.panic_threshold
    else:
        over_panic = False

    if over_panic:
        if not state.in_panic:
            state.in_panic = True
            state.max_panic_pods = ready_pods
        state.panic_since = now
    elif state.in_panic and state.panic_since is not None and now - state.panic_since >= window:
        state.in_panic = False
        state.panic_since = None
        state.max_panic_pods = 0

    desired = desired_stable
    if state.in_panic:
        desired = max(desired_panic, state.max_panic_pods)
        state.max_panic_pods = desired

    desired = max(desired, min_scale)
    if max_scale > 0:
        desired = min(desired, max_scale)

    if desired == 0 and ready_pods > 0:
        # handleScaleToZero: fast path when the activator is already in the path, else grace.
        if activator_in_path(config, ready_pods, panic_concurrency):
            state.zero_wanted_since = None
        else:
            if state.zero_wanted_since is None:
                state.zero_wanted_since = now
            if now - state.zero_wanted_since < config.scale_to_zero_grace_s:
                desired = 1  # desired 0 implies ready <= 1 here (maxScaleDown = floor(ready / 2))
    else:
        state.zero_wanted_since = None
    state.desired = desired
    return desired


def panic_window_s(config: KpaConfig, stable_window_s: float | None = None) -> float:
    window = stable_window_s or config.stable_window_s
    return max(config.tick_s, window * config.panic_window_percentage / 100.0)
