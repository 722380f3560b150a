"""The fallback to the baseline: a Service whose forecast has measured no skill is scaled by a
keep-alive instead. Pure functions, shared by the scale function and the backtest.

Why: the forecast function scores every Service's next-minute forecast once the minute is
known (forecast/quality.py) and ships the rolling figures with the forecast (`skill`). A P(any)
whose Brier score is worse than the Service's own base rate (Brier skill < 0) is a forecast that
knows less about this Service than "it is busy this share of minutes": pre-warming on it spends
pod-seconds on noise and misses the minutes it should have kept. For such a Service the decision
falls back to the simplest policy that needs no model, a keep-alive (min-scale 1 while a request
came in the last `keepalive_minutes` observed minutes); it returns to the forecast as soon as
the rolling skill does. Where P(any) cannot be judged (a Service busy every minute, or idle
every minute: the base rate is perfect and the Brier skill undefined) the forecast is kept: the
keep-alive is a scale-to-zero baseline, which for a Service busy every minute is Knative alone,
and what pre-scales such a Service is the forecast's upper quantile, which the point forecast's
MASE does not judge (it is sent, and shown, but decides nothing here). Too few scored minutes
judge nothing: the forecast is used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from .min_scale_policy import MinuteForecast


@dataclass(frozen=True)
class Skill:
    """A Service's rolling forecast skill, as the forecast function measured it online."""

    brier_skill: float
    """1 - Brier / Brier of the Service's own base rate (NaN: undefined or not measured)."""
    mase: float
    """MAE over the seasonal naive's MAE (NaN: undefined or not measured)."""
    minutes: int
    """Scored minutes behind the two figures."""


@dataclass(frozen=True)
class FallbackSettings:
    min_brier_skill: float | None = 0.0
    """Below this Brier skill the Service falls back to the keep-alive (None: never fall back)."""
    min_minutes: int = 30
    """Scored minutes needed before the skill may send a Service to the fallback."""
    keepalive_minutes: int = 10
    """The fallback's keep-alive: min-scale 1 while a request came in this many observed minutes."""


def forecast_helps(skill: Skill | None, settings: FallbackSettings) -> bool:
    """False only on evidence that the forecast is worse than the baseline (see the module)."""
    if skill is None or settings.min_brier_skill is None or skill.minutes < settings.min_minutes:
        return True
    return not math.isfinite(skill.brier_skill) or skill.brier_skill >= settings.min_brier_skill


def keepalive_forecast(observed: Sequence[float | None], horizon: int, settings: FallbackSettings) -> list[MinuteForecast]:
    """The keep-alive written as a forecast the min-scale policy reads: P(any) 1 while a request
    came in the last `keepalive_minutes` observed minutes (an unobserved minute counts as one
    that may have had a request: never scale down on missing data), else 0; no load beyond one
    pod (KPA scales out from there, as it does under the keep-alive)."""
    recent = list(observed)[-settings.keepalive_minutes:] if settings.keepalive_minutes > 0 else []
    warm = any(c is None or c > 0 for c in recent)
    return [MinuteForecast(point_rps=0.0, upper_rps=0.0, p_any=1.0 if warm else 0.0) for _ in range(max(1, horizon))]
