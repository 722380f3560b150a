"""Once-a-minute controllers the simulator scores: ours, and the baselines it is compared with.

- PolicyController: our min-scale policy (scale.min_scale_policy, the code the scale function
  runs) fed by any forecast source: the walk-forward forecaster, the seasonal-naive predictor,
  or the oracle (the actual future counts).
- KeepAlive: min-scale 1 until the service has been idle for a fixed number of minutes.
- AlwaysOn: min-scale 1 all the time.
- HybridHistogram: the hybrid histogram policy of Shahrad et al., "Serverless in the Wild"
  (USENIX ATC 2020), with its published parameters: idle-time histogram of 1-minute bins over
  4 hours; pre-warm window = 5th percentile of idle times minus a 10% margin, keep-alive window
  = 99th percentile plus 10% minus the pre-warm window; when the histogram is not yet
  representative (too few idle times, or a coefficient of variation of bin counts under 2) the
  standard keep-alive of the whole 4-hour range. Its ARIMA branch for apps whose idle times
  mostly exceed 4 hours is not implemented: such apps get the standard keep-alive here.
"""

from __future__ import annotations

import numpy as np
from scale.annotations import ServicePolicy
from scale.decision import MIN_SCALE, ServiceView, plan
from scale.fallback import FallbackSettings, Skill
from scale.min_scale_policy import MinuteForecast, PolicySettings

from training.simulator import Control


class PolicyController:
    """The scale function's whole decision (scale.decision.plan), fed what a simulated Service's
    one routed Revision carries, exactly as the function reads it from the cluster."""

    OBSERVED = 60  # minutes of the forecast event's `observed` block

    def __init__(self, forecasts: "ForecastTable", settings: PolicySettings,
                 skills: dict[str, np.ndarray] | None = None, fallback: FallbackSettings | None = None):
        """`skills`: the rolling skill the forecast function would send at each forecast minute
        (training.skill.rolling_skill over the same table); with `fallback`, the scale function's
        fallback to the keep-alive reads it, as it reads the event's."""
        self.forecasts = forecasts
        self.policy = ServicePolicy(settings, dry_run=False, user_window=None, may_set_window=True)
        self.current = 0
        self.raised_at: float | None = None
        self.skills = skills
        self.fallback = fallback
        self.baseline_minutes = 0

    def control(self, minute: int, counts: np.ndarray) -> Control:
        forecast = self.forecasts.at(minute)
        view = ServiceView(["revision"], {"revision": {MIN_SCALE: str(self.current)}})
        skill, observed = None, None
        i = minute - self.forecasts.first_minute
        if self.fallback is not None and self.skills is not None and 0 <= i < len(self.skills["minutes"]):
            skill = Skill(float(self.skills["brier_skill"][i]), float(self.skills["mase"][i]), int(self.skills["minutes"][i]))
            observed = [None if np.isnan(c) else float(c) for c in counts[max(0, minute - self.OBSERVED):minute]]
        last = float(counts[minute - 1]) if 0 < minute <= len(counts) else float("nan")
        decided = plan(view, self.policy, forecast, minute * 60.0, self.raised_at,
                       missing=None if forecast else "no forecast", skill=skill, observed=observed,
                       fallback=self.fallback, last_rps=None if np.isnan(last) else last / 60.0)
        self.baseline_minutes += decided.baseline
        self.current, self.raised_at = decided.min_scale, decided.raised_at_s
        return Control(decided.min_scale, decided.window_s)


class ForecastTable:
    """Per-minute forecasts computed ahead (walk-forward): row m is what was known at minute m."""

    def __init__(self, first_minute: int, point: np.ndarray, upper: np.ndarray, p_any: np.ndarray):
        self.first_minute = first_minute
        self.point, self.upper, self.p_any = point, upper, p_any

    def at(self, minute: int) -> list[MinuteForecast] | None:
        i = minute - self.first_minute
        if i < 0 or i >= len(self.point):
            return None
        return [MinuteForecast(float(p) / 60.0, float(u) / 60.0, float(q))  # counts per minute -> req/s
                for p, u, q in zip(self.point[i], self.upper[i], self.p_any[i])]


def seasonal_naive_table(counts: np.ndarray, first: int, last: int, horizon: int, recent: int = 5) -> ForecastTable:
    """Same minute yesterday, or the last few minutes: P(any) is 1 if either had a request."""
    filled = np.nan_to_num(counts)
    rows = np.arange(first, last)
    point = np.zeros((len(rows), horizon))
    p_any = np.zeros((len(rows), horizon))
    recent_mean = np.array([filled[max(0, m - recent):m].mean() if m > 0 else 0.0 for m in rows])
    for h in range(horizon):
        target = rows + h
        yday = np.where(target - 1440 >= 0, filled[np.clip(target - 1440, 0, None)], 0.0)
        point[:, h] = np.maximum(yday, recent_mean)
        p_any[:, h] = (point[:, h] > 0).astype(float)
    return ForecastTable(first, point, point, p_any)


def oracle_table(counts: np.ndarray, first: int, last: int, horizon: int) -> ForecastTable:
    filled = np.nan_to_num(counts)
    padded = np.concatenate((filled, np.zeros(horizon)))
    rows = np.arange(first, last)
    actual = np.stack([padded[rows + h] for h in range(horizon)], axis=1)
    return ForecastTable(first, actual, actual, (actual > 0).astype(float))


class KeepAlive:
    def __init__(self, minutes: int):
        self.minutes = minutes

    def control(self, minute: int, counts: np.ndarray) -> Control:
        recent = counts[max(0, minute - self.minutes):minute]
        return Control(1 if np.nansum(recent) > 0 else 0)


class AlwaysOn:
    def control(self, minute: int, counts: np.ndarray) -> Control:
        return Control(1)


class HybridHistogram:
    RANGE_MIN = 240
    HEAD, TAIL, MARGIN, CV_THRESHOLD, MIN_SAMPLES = 5, 99, 0.10, 2.0, 10

    def __init__(self) -> None:
        self.histogram = np.zeros(self.RANGE_MIN + 1)
        self.out_of_bounds = 0
        self.last_active: int | None = None
        self.seen_until = 0
        self._windows: tuple[float, tuple[int, int]] | None = None  # (histogram total, windows)

    def _observe(self, counts: np.ndarray, minute: int) -> None:
        for m in range(self.seen_until, minute):
            if counts[m] > 0:  # NaN (a gap) compares False: no request, as nan_to_num made it
                if self.last_active is not None and m - self.last_active > 1:
                    idle = m - self.last_active - 1
                    if idle <= self.RANGE_MIN:
                        self.histogram[idle] += 1
                    else:
                        self.out_of_bounds += 1
                self.last_active = m
        self.seen_until = minute

    def windows(self) -> tuple[int, int]:
        """(pre-warm, keep-alive) in minutes."""
        total = float(self.histogram.sum())  # counts only grow: the total says when it changed
        if self._windows is None or self._windows[0] != total:
            self._windows = (total, self._compute_windows())
        return self._windows[1]

    def _compute_windows(self) -> tuple[int, int]:
        total = self.histogram.sum()
        # CV over all bins: one prominent bin (a predictable idle time) has a high CV.
        cv = self.histogram.std() / self.histogram.mean() if total else 0.0
        if total < self.MIN_SAMPLES or cv < self.CV_THRESHOLD:
            return 0, self.RANGE_MIN
        cumulative = np.cumsum(self.histogram) / total
        head = int(np.searchsorted(cumulative, self.HEAD / 100.0))
        tail = int(np.searchsorted(cumulative, self.TAIL / 100.0)) + 1
        prewarm = int(np.floor(head * (1 - self.MARGIN)))
        keepalive = max(1, int(np.ceil(tail * (1 + self.MARGIN))) - prewarm)
        return prewarm, keepalive

    def control(self, minute: int, counts: np.ndarray) -> Control:
        self._observe(counts, minute)
        if self.last_active is None:
            return Control(0)
        idle = minute - 1 - self.last_active
        prewarm, keepalive = self.windows()
        return Control(1 if prewarm <= idle < prewarm + keepalive else 0)


class OracleMinute:
    """Knows every future arrival and acts once a minute like the others: min-scale at tick m
    covers exactly the arrivals from the moment it applies until the next tick's pods can be
    ready (so no request is cold), with as many pods as their peak second
    needs; with the window lever it also cuts the window whenever that span has no arrival.
    The least a once-a-minute min-scale schedule can pay for zero cold starts."""

    def __init__(self, arrivals: np.ndarray, capacity_rps: float, actuation_delay_s: int, cold_start_s: float,
                 window_lever: bool, idle_window_s: float = 6.0):
        self.arrivals = arrivals
        self.capacity = capacity_rps
        self.delay = actuation_delay_s
        self.lag = actuation_delay_s + int(np.ceil(cold_start_s))
        self.window = idle_window_s if window_lever else None

    def control(self, minute: int, counts: np.ndarray) -> Control:
        # From this decision on (lowering takes effect at once: KPA may drop an idle pod on its
        # next tick) until the next decision's pods can be ready.
        span = self.arrivals[minute * 60 + self.delay:(minute + 1) * 60 + self.lag]
        peak = int(span.max()) if len(span) else 0
        if peak == 0:
            return Control(0, self.window)
        return Control(max(1, int(np.ceil(peak / self.capacity))))
