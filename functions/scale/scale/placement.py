"""Where each model lives (the shared pool or its own Service), how many models a pool pod
pre-loads, and the one price that keeps a fleet within its budget. Pure functions, no I/O.

Imported by the scale function (which actuates it: scale/pool_placement.py) and by the fleet
backtest (which scores it), so that the backtest's numbers describe what the function decides.
The placement input is the same on both sides: a model's expected rate is the mean of its
next-minute point forecasts over the last hour (`expected_rate`; the backtest's Placer computes
it vectorised over the fleet), evaluated every PLACEMENT_EVERY_MINUTES (10).

Why a pool: a sparse model alone keeps a pod for one request now and then, and pays a cold
start for most of them; many sparse models in one scale-to-zero Service share warm pods (a model
loads in a pod in milliseconds, a pod starts in seconds). A model that keeps a pod busy on its
own gains nothing from sharing one and would crowd the pool's memory: it gets a dedicated
Service, pre-scaled by the min-scale policy as before.

Hysteresis, so that models do not flap between tiers (every move is a routing change): a model
is dedicated once its forecast rate has stayed at or above `dedicate_rps` for `hold_minutes`,
and returns to the pool once it has stayed below `pool_rps` (lower) for as long.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

from scale.min_scale_policy import MinuteForecast, p_any_in

POOL = "pool"
DEDICATED = "dedicated"


@dataclass(frozen=True)
class PlacementSettings:
    capacity_rps: float = 10.0
    """Requests per second one pod serves."""
    dedicate_share: float = 0.7
    """A model is dedicated at this share of one pod's capacity (0.7: Knative's default target
    utilization, the rate at which it already keeps a pod of its own busy)."""
    pool_share: float = 0.35
    """...and returns to the pool below this share (half of the above: the hysteresis band)."""
    hold_minutes: float = 60
    """How long the forecast must favour the other tier before a model moves."""

    @property
    def dedicate_rps(self) -> float:
        return self.dedicate_share * self.capacity_rps

    @property
    def pool_rps(self) -> float:
        return self.pool_share * self.capacity_rps


@dataclass(frozen=True)
class Placement:
    tier: str = POOL
    """POOL or DEDICATED; a model nobody has placed yet starts in the pool."""
    leaning_since: float | None = None
    """Since when (seconds) the forecast has favoured the other tier without a break."""


def place(forecast_rps: float, current: Placement, now_s: float, settings: PlacementSettings) -> Placement:
    """The model's next placement from its forecast rate (req/s, the coming hour's expected
    mean). A missing or non-finite forecast holds: no move on no data."""
    if forecast_rps is None or not math.isfinite(forecast_rps):
        return Placement(current.tier, None)
    if current.tier == POOL:
        leaning = forecast_rps >= settings.dedicate_rps
    else:
        leaning = forecast_rps < settings.pool_rps
    if not leaning:
        return Placement(current.tier, None)
    since = current.leaning_since if current.leaning_since is not None else now_s
    if now_s - since >= settings.hold_minutes * 60:
        return Placement(DEDICATED if current.tier == POOL else POOL, None)
    return Placement(current.tier, since)


def place_fleet(forecast_rps: Mapping[str, float], current: Mapping[str, Placement], now_s: float,
                settings: PlacementSettings) -> dict[str, Placement]:
    """`place` for every model with a forecast; models without one keep where they are."""
    out = dict(current)
    for model, rate in forecast_rps.items():
        out[model] = place(rate, current.get(model, Placement()), now_s, settings)
    return out


def expected_rate(samples: Sequence[tuple[float, float]], now_s: float, window_minutes: int = 60) -> float:
    """A model's expected rate in req/s: the mean of its next-minute point forecasts (one per
    tick) made in the last `window_minutes`, `samples` as (tick_s, point req/s). NaN when there
    is none (placement then holds)."""
    recent = [v for t, v in samples if now_s - window_minutes * 60 < t <= now_s and math.isfinite(v)]
    return sum(recent) / len(recent) if recent else math.nan


def pooled_forecast(members: Sequence[Sequence[MinuteForecast]]) -> list[MinuteForecast]:
    """The pool's forecast from its models' forecasts, minute by minute: the points add up; the
    upper quantile is the summed point plus the members' spreads (upper - point) added in
    quadrature, as independent errors add (the plain sum of upper quantiles bounds the sum's
    quantile but grows with the number of members: on the ServeGen fleet it sized the pool at
    1.27x per-model Knative's pod-seconds); a member minute whose upper quantile does not lie
    above its mean (`min_scale_policy.backed`: the forecaster's mean ran away) adds nothing to
    the sizing, as it sizes no pods of a Service of its own (Knative's own scaling serves it);
    and the pool is idle in a minute only if every model is (taken independent). Over the
    minutes every member forecasts; no member: an idle forecast of one minute."""
    if not members:
        return [MinuteForecast(0.0, 0.0, 0.0)]
    horizon = min(len(m) for m in members)
    out = []
    for i in range(horizon):
        idle, point, spread = 1.0, 0.0, 0.0
        for m in members:
            f = m[i]
            idle *= 1.0 - min(1.0, max(0.0, f.p_any))
            if f.upper_rps > f.point_rps:  # min_scale_policy.backed: a run-away mean sizes nothing
                point += f.point_rps
                spread += (f.upper_rps - f.point_rps) ** 2
        out.append(MinuteForecast(point, point + math.sqrt(spread), 1.0 - idle))
    return out


STAY, SETTLING, PREPARE, MOVE, WAIT_SETTLE = "stay", "settling", "prepare", "move", "wait-settle"


def route_step(decided: str, routed: str, settled: bool, target_ready: bool) -> str:
    """What to do with a model's route this tick, given the tier placement decided, the tier its
    routing resource points at (`routed`), whether that resource is programmed (`settled`: the
    gateways route as it says) and whether the decided tier is ready to serve the model now.

    - STAY: routed where decided, programmed.
    - SETTLING: routed where decided, not programmed yet: keep both tiers warm.
    - WAIT_SETTLE: a move is wanted, but the last one is not programmed yet: never re-point a
      route still in flight.
    - PREPARE: a move is wanted and its target is not ready: warm it (a dedicated Service's pods,
      the model loaded in the pool), keep the route.
    - MOVE: re-point the route now: the target is ready, so no request meets a cold target."""
    if decided == routed:
        return STAY if settled else SETTLING
    if not settled:
        return WAIT_SETTLE
    return MOVE if target_ready else PREPARE


def preload(forecasts: Mapping[str, Sequence[MinuteForecast]], models_per_pod: int, threshold: float) -> list[str]:
    """Pool models worth loading in every pool pod before their requests come: those whose
    P(a request in the covered minutes) reaches `threshold`, likeliest first, at most what a
    pod holds."""
    ranked = sorted(((p_any_in(f), m) for m, f in forecasts.items() if f), reverse=True)
    return [m for p, m in ranked if p >= threshold][:max(0, models_per_pod)]


def models_per_pod(pool_memory_mb: float, model_mb: float) -> int:
    """How many models a pool pod keeps loaded within its memory budget (at least one)."""
    if model_mb <= 0:
        raise ValueError("model_mb must be positive")
    return max(1, int(pool_memory_mb // model_mb))


@dataclass(frozen=True)
class BudgetSettings:
    min_price: float = 10.0
    max_price: float = 100_000.0
    recover_hours: float = 24.0
    """A spend gap (over or under the budget so far) is made up over as many hours as it took to
    build up, at most this many, not all in the next hour: the budget is a total over the span,
    and an hour-by-hour target would make the fleet follow per-model Knative's hourly profile
    (spend in busy hours, where pooled pods are warm anyway, and save in quiet ones, where the
    cold starts are)."""


def allowed_spend(budget_rate: float, spent: float, budgeted: float, hours: float, elapsed_hours: float,
                  settings: BudgetSettings = BudgetSettings()) -> float:
    """Pod-seconds the fleet may spend in the next `hours`: the budget's rate (budget x per-model
    Knative's pod-seconds per hour, as estimated from the history), plus the share of the gap so
    far (`budgeted` - `spent`, totals over the `elapsed_hours` the budget has run) due in that
    time. Never negative."""
    gap = budgeted - spent if math.isfinite(budgeted - spent) else 0.0
    over = min(settings.recover_hours, max(1.0, elapsed_hours))
    return max(0.0, budget_rate * hours + gap * min(1.0, hours / over))


def budget_price(pod_seconds: Sequence[Sequence[float]], cold: Sequence[Sequence[float]], allowed: float,
                 settings: BudgetSettings = BudgetSettings()) -> float:
    """The fleet budget's price (a cold start's worth in pod-seconds, one for every Service),
    from the history instead of by trial: `pod_seconds[s][c]` and `cold[s][c]` are what candidate
    schedule c of Service s spent and left cold over the same history, `allowed` what the fleet
    may spend over a history that long. Each Service takes the candidate cheapest at the price
    (pod-seconds + price x cold), so the fleet's spend is a step function of the price; the
    answer is the price whose spend is nearest `allowed` (on either side: always rounding down
    would leave a fleet of few Services under its budget for good; the gap feeds back through
    `allowed_spend`), within the bounds."""
    rows = [list(zip(p, c)) for p, c in zip(pod_seconds, cold)]

    def spend(price: float) -> float:
        return sum(min(row, key=lambda pc: pc[0] + price * pc[1])[0] for row in rows if row)

    lo, hi = math.log(settings.min_price), math.log(settings.max_price)
    if spend(settings.max_price) <= allowed:
        return settings.max_price
    if spend(settings.min_price) > allowed:
        return settings.min_price
    for _ in range(40):  # bisect on the log of the price for the step that crosses `allowed`
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if spend(math.exp(mid)) <= allowed else (lo, mid)
    below, above = math.exp(lo), math.exp(hi)
    return above if spend(above) - allowed < allowed - spend(below) else below
