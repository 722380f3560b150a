"""The min-scale policy: forecast in, (min-scale, stable window) out. Pure functions.

One implementation, imported by the scale function (which actuates it) and by the backtest
simulator (which scores it), so that the backtest's numbers describe what the function does.

The cost knob is the price of one cold start in pod-seconds (`cold_start_cost_pod_s`). Keeping
one pod warm until the next decision costs 60 pod-seconds, and pays when the chance of a
request in the minutes the decision covers times the price of the cold start it avoids is
larger: the threshold on P(any request in the covered minutes) is 60 / cold_start_cost_pod_s. Above it, min-scale also covers the
forecast's upper quantile of load (ceil(upper req/s / per-pod capacity)), so that ramps are met
with ready pods instead of KPA's reactive scale-out lag. Every covered minute sizes pods: the
forecaster bounds its mean by its own upper quantile and the recent level, and every forecast by
twice the service's busiest minute of the last day, so a run-away mean no longer reaches the
upper (the `backed` work-around that sized pods only from minutes with upper > point is gone).

The second lever (opt-in: `idle_window_s` is None by default): when every minute the decision
covers is forecast idle (P(any) below half the warm threshold), the Revision's stable window is
shortened (e.g. `idle_window_s` = 6 s) so that
KPA takes it to zero in seconds instead of ~60 s; when traffic is forecast the window goes back
to the Service's own (None).

The busy-window lever (opt-in: `busy_window_s` is None by default; BUSY_WINDOW or the
`busy-window` annotation): when every covered minute is forecast busy (`is_busy`), or the
Service's last observed minute carried a pod's worth of load (`busy_trigger`), the window is
shortened (e.g. 15 s), so that Knative follows a step up within seconds of it rather than over a
minute; it goes back to the Service's own as soon as neither holds. It is
kept through a cool-down hold (the hold is about min-scale, the window about the load). Knative
resizes the stable and panic windows of a running Revision in place when the annotation changes
(knative/serving pkg/autoscaler/metrics/collector.go `updateMetric` -> `ResizeWindow`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Sequence


@dataclass(frozen=True)
class MinuteForecast:
    """One forecast minute. Rates are requests per second, the unit of the forecast event
    (`point_rps`, `upper_rps`), of pod capacity and of every rate after it: the forecaster's
    per-minute counts are divided by the minute once, where the forecast is made."""

    point_rps: float
    """Expected request rate over the minute."""
    upper_rps: float
    """Upper quantile of the request rate over the minute."""
    p_any: float
    """Probability of at least one request in the minute."""


LEAD_MINUTES = 2
"""Forecast minutes a decision covers: the current one and the next (pods take a cold start to
become ready, and the next decision comes a minute later). A property of the loop's cadence,
not a knob: the forecast event carries more minutes, and placement reads further ahead."""


@dataclass(frozen=True)
class PolicySettings:
    capacity_rps: float = 10.0
    """Requests per second one pod serves (annotation predictive-scaling.io/pod-capacity)."""
    cold_start_cost_pod_s: float = 300.0
    """What one avoided cold start is worth, in pod-seconds: the user's cost knob."""
    min_scale: int = 0
    """Lower bound the policy never goes below (annotation predictive-scaling.io/min)."""
    max_scale: int = 10
    """Upper bound the policy never goes above (annotation predictive-scaling.io/max)."""
    cooldown_s: float = 60.0
    """A raised min-scale is not lowered before this many seconds have passed."""
    idle_window_s: float | None = None
    """Stable window while idle is forecast (second lever, e.g. 6 s); None, the default, leaves
    the window alone: in the backtests the lever turned forecast errors into more cold starts
    than the pod-seconds it saved were worth at the default price (docs/results/single-trace.md)."""
    busy_window_s: float | None = None
    """Stable window while busy is forecast (every minute the decision covers is forecast to have
    a request and at least BUSY_POD_SHARE of a pod's rate) or was just observed (the last observed
    minute had that rate: `busy_trigger`), e.g. 15 s; None, the default, leaves
    the window alone (env BUSY_WINDOW, annotation predictive-scaling.io/busy-window). Why: a busy
    Service's requests over capacity come from steps up that Knative's 60 s stable window follows
    a minute late, and most are not foreseeable a minute ahead; a shorter window follows them in
    seconds, and lets pods go sooner after a step down (docs/results/single-trace.md)."""
    burst_risk: float | None = 0.1
    """Accepted chance that some second of a forecast minute brings more requests than the
    min-scale pods serve, with arrivals within the minute taken as Poisson at the upper-quantile
    rate (env BURST_RISK). None sizes pods for the minute's mean rate only."""
    headroom: float | None = None
    """With a value h, a minute's pods are sized from h x its point forecast instead of the
    forecaster's upper quantile: h is the Service's own error quantile (`error_headroom`: actual
    over point in its recent minutes), set per Service by whoever holds its history. The
    forecaster's quantile model is fitted once over every series, in units of each series' daily
    mean, so a smooth busy Service and a bursty sparse one with the same recent shape get the same
    relative spread; the Service's own errors say how far its actual load strays from the point.
    None: the forecaster's upper quantile."""

    @property
    def warm_threshold(self) -> float:
        return min(1.0, 60.0 / self.cold_start_cost_pod_s) if self.cold_start_cost_pod_s > 0 else 1.0

    @property
    def idle_threshold(self) -> float:
        """P(any) under which a minute counts as idle (the window lever): half the warm threshold,
        so that a minute is not both worth keeping warm and idle."""
        return self.warm_threshold / 2


@dataclass(frozen=True)
class Decision:
    min_scale: int
    window_s: float | None
    reason: str
    raised_at_s: float | None
    """When min-scale was last raised (the cool-down clock), carried to the next decision."""


def p_any_in(covered: Sequence[MinuteForecast]) -> float:
    """P(at least one request in the covered minutes), taking the minutes as independent."""
    miss = 1.0
    for f in covered:
        miss *= 1.0 - min(1.0, max(0.0, f.p_any))
    return 1.0 - miss


def desired_min_scale(forecast: Sequence[MinuteForecast], settings: PolicySettings) -> int:
    covered = list(forecast[:LEAD_MINUTES])
    if not covered or p_any_in(covered) < settings.warm_threshold:
        return _clamp(0, settings)
    load = max(minute_pods(f, settings) for f in covered)  # pods grow with the load
    return _clamp(max(1, load), settings)


def minute_pods(f: MinuteForecast, settings: PolicySettings) -> int:
    """Pods for one forecast minute: the busiest second (`_pods_for`) of its upper quantile, or
    of the point forecast times the Service's own `headroom` when it has one."""
    return _pods_for(f.upper_rps if settings.headroom is None else f.point_rps * settings.headroom, settings)


def error_headroom(actual_rps: Sequence[float], point_rps: Sequence[float], quantile: float) -> float | None:
    """The `quantile` of actual / point over past minutes of one Service (its forecasts then, what
    came): the factor that would have covered that share of its minutes. Minutes forecast at 0
    say nothing about a factor and are left out; None when no minute is left."""
    ratios = sorted(a / p for a, p in zip(actual_rps, point_rps) if p > 0 and math.isfinite(p) and math.isfinite(a))
    if not ratios:
        return None
    position = quantile * (len(ratios) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ratios) - 1)
    return ratios[low] + (ratios[high] - ratios[low]) * (position - low)


def _pods_for(upper_rps: float, settings: PolicySettings) -> int:
    """Pods for a forecast load, never more than max-scale (an absurd forecast cannot overflow).

    Requests over ready capacity come from the busiest second, not from the minute's mean: a
    minute of 300 requests averages 5 req/s but, Poisson within the minute, has a second of 11
    or more in about half of such minutes. So with `burst_risk` set, the pods cover the peak second
    that the minute exceeds with that probability at most."""
    if not math.isfinite(upper_rps):
        return settings.max_scale
    rate = max(upper_rps, 0.0)
    if settings.burst_risk is not None and rate > 0:
        rate = max(rate, peak_second(rate, settings.burst_risk))
    pods = rate / settings.capacity_rps
    return settings.max_scale if pods >= settings.max_scale else math.ceil(pods - 1e-9)


@functools.lru_cache(maxsize=4096)
def peak_second(rate: float, risk: float, seconds: int = 60) -> float:
    """The count k that no second of a minute exceeds, with probability >= 1 - risk, when each
    second's count is Poisson(rate): the smallest k with seconds * P(X > k) <= risk. Exact sum
    (each term from the one before: exp(-100) is still a normal double) up to a rate of 100 per
    second; a normal approximation above. Pure, so remembered (bounded): an event of 10,000
    services asks it for far fewer distinct rates, and the sum is up to ~700 terms."""
    tail = min(1.0, max(risk, 1e-12) / seconds)
    if rate > 100:
        return rate + NormalDist().inv_cdf(1.0 - tail) * math.sqrt(rate) + 1.0
    term = math.exp(-rate)
    cumulative, k, limit = term, 0, rate + 60 * math.sqrt(rate) + 60
    while 1.0 - cumulative > tail and k <= limit:
        k += 1
        term *= rate / k
        cumulative += term
    return float(k)


def decide(
    forecast: Sequence[MinuteForecast] | None,
    settings: PolicySettings,
    current: int,
    now_s: float,
    raised_at_s: float | None,
    fresh: bool = True,
    last_rps: float | None = None,
) -> Decision:
    """The next min-scale and window. Missing or stale forecasts hold: never lower on no data.
    `last_rps` is the Service's last observed minute's rate (None: not observed), which the
    busy-window lever reads (`busy_trigger`)."""
    if not forecast or not fresh:
        why = "no forecast" if not forecast else "forecast is stale"
        return Decision(current, None, f"hold at {current}: {why}", raised_at_s)
    desired = desired_min_scale(forecast, settings)
    covered = forecast[:LEAD_MINUTES]
    idle = all(f.p_any < settings.idle_threshold for f in covered)
    window = settings.idle_window_s if idle and desired == 0 and settings.idle_window_s else None
    if window is None and settings.busy_window_s and busy_trigger(covered, settings, last_rps):
        window = settings.busy_window_s
    peak = p_any_in(covered)
    if desired > current:
        return Decision(desired, window, f"raise to {desired}: P(any)={peak:.2f}", now_s)
    if desired < current:
        if raised_at_s is not None and now_s - raised_at_s < settings.cooldown_s:
            busy = settings.busy_window_s if settings.busy_window_s and busy_trigger(covered, settings, last_rps) else None
            return Decision(current, busy, f"hold at {current}: cool-down until {raised_at_s + settings.cooldown_s:.0f}s", raised_at_s)
        return Decision(desired, window, f"lower to {desired}: P(any)={peak:.2f}", raised_at_s)
    return Decision(current, window, f"keep {current}: P(any)={peak:.2f}", raised_at_s)


BUSY_P_ANY = 0.99
BUSY_POD_SHARE = 0.7
"""A minute is busy when P(any) >= BUSY_P_ANY and its point rate is at least this share of one
pod's capacity (Knative's default target utilization: one pod's worth of load)."""


def is_busy(covered: Sequence[MinuteForecast], settings: PolicySettings) -> bool:
    """Every covered minute is forecast busy by its point rate (the busy-window lever's forecast trigger)."""
    return bool(covered) and all(f.p_any >= BUSY_P_ANY and f.point_rps >= BUSY_POD_SHARE * settings.capacity_rps
                                 for f in covered)


def busy_trigger(covered: Sequence[MinuteForecast], settings: PolicySettings, last_rps: float | None = None) -> bool:
    """Whether the busy-window lever shortens the window this minute: every covered minute is
    forecast busy (`is_busy`), or the Service's last observed minute carried a pod's worth of load
    (`last_rps` >= BUSY_POD_SHARE of a pod's capacity; None: not observed). The second trigger
    covers the starts of active periods: the forecast takes minutes to call a new period busy
    (both covered minutes at P(any) >= 0.99 and a pod's worth), while the minute just observed
    says so one minute in. Same threshold as the forecast trigger, nothing fitted."""
    if is_busy(covered, settings):
        return True
    return bool(covered) and last_rps is not None and last_rps >= BUSY_POD_SHARE * settings.capacity_rps


def _clamp(value: int, settings: PolicySettings) -> int:
    return max(settings.min_scale, min(settings.max_scale, value))
