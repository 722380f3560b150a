"""The keep-alive that spends what the predictive policy spends, chosen on history only.

Knative's own answer to cold starts is `autoscaling.knative.dev/scale-to-zero-pod-retention-period`:
the last pod stays for that long after the last request. A fair comparison gives it the same
money. The rule (`make demo`'s third arm): on the history before the replayed window, simulate
the predictive policy (the scale function's decision, fed the forecaster the live loop runs,
which never saw that history: walk-forward by construction; the last two days of it, each minute
forecast from the minutes before it) and Knative with a keep-alive of k
minutes (training.controllers.KeepAlive: min-scale 1 while a request came in the last k minutes),
same arrivals, same simulator; take the k whose pod-seconds come closest to the predictive
policy's (the smaller k on a tie). Pod-seconds grow with k, so k is found by bisection.
The replayed window is never looked at.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scale.min_scale_policy import PolicySettings

from training.controllers import ForecastTable, KeepAlive, PolicyController
from training.simulator import SimConfig, SimResult, simulate, spread_minutes

DAY = 1440


@dataclass(frozen=True)
class Match:
    minutes: int
    """The keep-alive (retention period) in minutes."""
    keepalive_pod_seconds: float
    predictive_pod_seconds: float
    keepalive_cold_starts: int
    predictive_cold_starts: int
    requests: int
    scored_minutes: int


def matched_keepalive(counts: np.ndarray, start_minute: int, estimator, settings: PolicySettings,
                      cold_start_s: float, span_minutes: int = 2 * DAY, max_minutes: int = 240, seed: int = 0) -> Match:
    """`counts`: the history's requests per minute, from epoch minute `start_minute`;
    `estimator`: a fitted forecaster (`predict_origins`). The last `span_minutes` of the history
    are simulated (a per-second simulation of a whole week per candidate would take minutes);
    their forecasts use all the history before each minute, as the live function's do."""
    counts = np.nan_to_num(np.asarray(counts, dtype=float))
    n = len(counts)
    first = max(0, n - span_minutes)
    span = counts[first:]
    arrivals = spread_minutes(span, seed)
    sim = SimConfig(capacity_rps=settings.capacity_rps, cold_start_s=cold_start_s, seed=seed)
    forecast = estimator.predict_origins(counts, np.arange(first, n), start_minute)
    table = ForecastTable(0, forecast.point, forecast.upper, forecast.p_any)
    predictive = simulate(arrivals, PolicyController(table, settings), sim, span)
    tried: dict[int, SimResult] = {}

    def keep(k: int) -> SimResult:
        if k not in tried:
            tried[k] = simulate(arrivals, KeepAlive(k), sim, span)
        return tried[k]

    target = predictive.pod_seconds
    lo, hi = 1, max_minutes
    if keep(hi).pod_seconds <= target:
        lo = hi
    while lo < hi:  # the smallest k spending at least the target
        mid = (lo + hi) // 2
        if keep(mid).pod_seconds >= target:
            hi = mid
        else:
            lo = mid + 1
    best = lo
    if lo > 1 and abs(keep(lo - 1).pod_seconds - target) <= abs(keep(lo).pod_seconds - target):
        best = lo - 1
    chosen = keep(best)
    return Match(best, chosen.pod_seconds, predictive.pod_seconds, chosen.cold_start_requests,
                 predictive.cold_start_requests, predictive.requests, len(span))
