"""The demo's keep-alive rule: the retention whose simulated pod-seconds come closest to the
predictive policy's on the same history, found by bisection over a monotone cost."""

from __future__ import annotations

import numpy as np
from forecast.forecaster import Forecast
from scale.min_scale_policy import PolicySettings

from training.controllers import KeepAlive
from training.keepalive_match import matched_keepalive
from training.simulator import SimConfig, simulate, spread_minutes


class LastMinute:
    """A plain forecaster: every horizon minute is what the minute before the origin saw."""

    horizon = 3

    def predict_origins(self, values, origins, start_minute=0):
        last = np.array([values[o - 1] if o > 0 else 0.0 for o in origins], dtype=float)
        point = np.repeat(last[:, None], self.horizon, axis=1)
        return Forecast(point, point * 2 + 1, np.repeat((last > 0)[:, None] * 0.9 + 0.05, self.horizon, axis=1))


def test_the_chosen_keepalive_spends_closest_to_the_predictive_policy():
    rng = np.random.default_rng(3)
    counts = np.zeros(1500)
    for start in rng.choice(np.arange(0, 1490), size=25, replace=False):
        counts[start:start + rng.integers(1, 6)] = rng.integers(1, 8)
    settings = PolicySettings(capacity_rps=10)
    match = matched_keepalive(counts, 0, LastMinute(), settings, cold_start_s=5.0, span_minutes=720, max_minutes=60)
    span = counts[-720:]
    arrivals = spread_minutes(span, 0)
    sim = SimConfig(capacity_rps=10, cold_start_s=5.0)

    def cost(k: int) -> float:
        return simulate(arrivals, KeepAlive(k), sim, span).pod_seconds

    assert 1 <= match.minutes <= 60 and match.scored_minutes == 720
    assert match.keepalive_pod_seconds == cost(match.minutes)
    gap = abs(match.keepalive_pod_seconds - match.predictive_pod_seconds)
    for neighbour in (match.minutes - 1, match.minutes + 1):
        if 1 <= neighbour <= 60:
            assert gap <= abs(cost(neighbour) - match.predictive_pod_seconds)
    assert match.requests == int(span.sum())
