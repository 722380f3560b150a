"""The pool plan: one pure function from what the scale function knows about a namespace's model
pool to everything it does there. No I/O (.importlinter's pure-math contract checks it).

In: the namespace as read (`PoolView`: each model's route, whether its tiers can serve, the
mappings' readiness, the pool's capacity), the forecasts of this event, the bounded minute
history the function keeps in Redis (`TierHistory`: only when a warmth choice is due), the
settings, the remembered state and the clock.
Out (`PoolPlan`): each model's tier and route action, the pre-loads, and each tier's warmth (the
forecast, price and floor its min-scale is decided from by decision.plan, and the Knative
keep-alive annotation it carries), each with its reason, and the state to remember.

`scale/pool_placement.py` reads the cluster, calls `plan_pool` and writes what it says; the fleet
backtest (training/fleet_backtest.py, `PoolPlanDriver`) calls the very same function minute by
minute with the same kind of inputs, so the fleet table's default is what a cluster runs.

Placement by memory (`_memory_rule`): a model the rate band would dedicate leaves the pool only
where that pays: when the pool's pods would spend more than `load_time_share` of their time
loading models (model loads/s by Che's approximation of each pod's LRU, `load_rate_of`, x the
pool's model load time, over the pods Knative holds at its target: `load_time_share_of`),
busiest first, as few as bring the time within it, and none when no number of them would; a
dedicated model comes back once the pool would have held it within half that for placement's
hold.

Warmth, chosen per tier from history (`choose_warmth`): the candidates are the forecast policy at
several prices (alone, or with a short Knative retention on top), Knative's own keep-alive (`scale-to-zero-pod-retention-period`, 0-1 h, the
Revision webhook's limit; longer keep-alives are min-scale 1 held by this plan), the hybrid
histogram of "Serverless in the Wild" (Shahrad et al., 2020) on the tier's own idle gaps, and a
time-of-day schedule. Each is scored on the same history at minute grain (`estimate`, counting
the pods each holds: Knative's own for the load, and what the forecast sized where it warms): the only
resolution the deployed function has (Prometheus counts per minute, the forecast events); the
per-second simulator scores the outcome in the backtest, never the choice.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

from .min_scale_policy import LEAD_MINUTES, MinuteForecast, PolicySettings, minute_pods
from .placement import (DEDICATED, MOVE, POOL, Placement, PlacementSettings, expected_rate, place,
                        pooled_forecast, preload, route_step)

RETENTION = "autoscaling.knative.dev/scale-to-zero-pod-retention-period"
RETENTION_MAX_MINUTES = 60
IDLE = (MinuteForecast(0.0, 0.0, 0.0),) * LEAD_MINUTES
"""autoscaling.ValidateAnnotations accepts a retention of 0-1 h: a longer keep-alive is a floor."""
COLD_MINUTE_SAVING = 0.5
"""A minute whose first request found no pod holds one only from that request on: half the minute
on average (the pod then lives Knative's 60 s stable window and ~30 s grace past the last request,
which the estimate counts as the rest of that minute and the next)."""
STABLE_TAIL = 0.5
"""The last minute of a pod's tail holds it half the minute: Knative's stable window (60 s) runs
from the last request, mid-minute on average, and the pod goes when it closes (for a Service
scaled from zero the activator stays in the path and the scale-to-zero grace is not waited); a
retention shifts that end by whole minutes. Counting the whole minute over-counted an isolated
request's pod by half a minute, most of per-model Knative's spend on sparse models."""
BUDGET_KEEPALIVE_MINUTES = tuple(range(1, RETENTION_MAX_MINUTES + 1)) + (90, 120, 180, 240, 360, 480, 720)
"""The keep-alives a fleet budget chooses among: every minute Knative's retention takes, then
floors of up to 12 hours, so that the candidates' spend is a near-continuous curve the budget can
land on (the user's price needs no such grid: its score is flat near its minimum)."""
DEFAULT_MODEL_LOAD_S = 0.05
"""A model's load time in a pool pod where nothing says otherwise (POOL_MODEL_LOAD_MS's default,
the fleet backtest's): an ONNX model of a few MiB loads in tens of milliseconds (make bench-pool)."""
TARGET_UTILIZATION = 0.7
"""Knative's default container-concurrency-target-percentage: the share of a pod's capacity the
autoscaler fills before it adds one (how many pods Knative alone holds for a minute's load)."""
LOAD_TIME_SHARE = (1.0 - TARGET_UTILIZATION) / 2.0
"""Placement by memory's bound: the pool's pods may spend at most this share of their time
loading models, half the headroom Knative's target leaves (15% at its 70%). The headroom is what
absorbs the load's swings between two autoscaler windows; time spent loading is taken from it on
every pod, all the time. Half stays for the swings it is there for; the other half may go to
loads. Beyond it, a pool pod busy at the target and loading is short of capacity at the first
swing, which a Service of the busiest model's own, with its own pods, mends."""


# -- the view, the history, the state --------------------------------------------------------
@dataclass(frozen=True)
class ModelView:
    name: str
    routed: str
    """POOL or DEDICATED: where the model's DomainMapping points now."""
    dedicated: str | None
    """Its dedicated Service (annotation), None when it has none."""
    dedicated_exists: bool
    """That Service exists and is opted in."""
    dedicated_ready: bool
    """...and is Ready with a ready pod on every routed Revision (a move's first request is warm)."""
    dedicated_failing: bool
    """...or its Ready condition says False (it cannot serve: image gone, quota, deleted Revision)."""
    settled: bool
    """The mapping is programmed as its spec says (observedGeneration = generation, Ready)."""
    size_mb: float = 0.0
    """The model's memory in a pool pod (0: unknown, counted as one slot)."""
    draining: bool = False
    """Its dedicated Service is being deleted but still serves (a finalizer holds it: the
    function's own, pool_placement.ROUTED_FINALIZER): it cannot be the model's tier any more,
    yet its route reaches a pod, so the move back waits for the pool to be warm with the model
    loaded, and the deletion goes through once the route has left it."""


@dataclass(frozen=True)
class PoolView:
    pool: str
    models: Sequence[ModelView]
    pool_warm: bool
    """The pool has a ready pod."""
    loaded: frozenset[str] = frozenset()
    """Models the answering pool pod holds (its V2 repository index), when read."""
    pool_current: int = 0
    """The min-scale the pool's routed Revisions carry now."""
    dedicated_current: Mapping[str, int] = field(default_factory=dict)
    capacity_models: int = 64
    """How many models a pool pod holds: POOL_MEMORY_MB // the models' size (`capacity_models`)."""
    model_load_s: float = DEFAULT_MODEL_LOAD_S
    """How long a pool pod takes to load a model (the pool Service's
    `predictive-scaling.io/model-load-ms`, else POOL_MODEL_LOAD_MS: `pool_placement.model_load_ms`)."""


@dataclass(frozen=True)
class TierHistory:
    """A tier's bounded minute history: `counts[i]` the requests of minute `start_minute + i`
    (None: not observed), `p_any[i]` the forecast P(any request in the minutes a decision covers)
    made at its start (None: no forecast), and per-model Knative's pod-minutes over the same
    minutes (for the fleet budget; None when not kept)."""

    start_minute: int
    counts: Sequence[float | None]
    p_any: Sequence[float | None]
    per_model_pod_minutes: float | None = None
    upper: Sequence[float | None] = ()
    """The tier's upper-quantile load (req/s) its forecast sized pods from at each minute (the
    members' summed as `placement.pooled_forecast` sums them), None: unknown. What a forecast
    candidate holds beyond one pod: without it the estimate would count a sized minute as one."""
    per_model: Sequence[float] = ()
    """Per-model Knative's pod-minutes in each minute (their sum is `per_model_pod_minutes`):
    the fleet budget's allowance over any stretch of the history."""


@dataclass
class ModelState:
    """What the cluster cannot say about one model's routing resource (kept in Redis)."""

    tick_s: float
    tier: str
    leaning_since: float | None = None
    samples: list[tuple[float, float]] = field(default_factory=list)
    """(tick_s, next-minute point forecast in req/s) for the last hour: the placement input."""
    unsettled_since: float | None = None
    """Since when the mapping has not been programmed (bounded)."""
    failing_since: float | None = None
    """Since when its dedicated Service has not been able to serve."""
    fits_since: float | None = None
    """Since when the pool would hold this dedicated model within half the load bound (the
    memory rule's hysteresis clock)."""

    def to_json(self) -> str:
        return json.dumps({"tick_s": self.tick_s, "tier": self.tier, "leaning_since": self.leaning_since,
                           "samples": [[t, round(v, 6)] for t, v in self.samples],
                           "unsettled_since": self.unsettled_since, "failing_since": self.failing_since,
                           "fits_since": self.fits_since})

    @classmethod
    def from_json(cls, raw: bytes | str) -> "ModelState | None":
        try:
            data = json.loads(raw)
            tier = data["tier"]
            if tier not in (POOL, DEDICATED):
                return None
            samples = [(float(t), float(v)) for t, v in data.get("samples") or []]
            state = cls(float(data["tick_s"]), tier, _opt(data.get("leaning_since")), samples,
                        _opt(data.get("unsettled_since")), _opt(data.get("failing_since")), _opt(data.get("fits_since")))
        except (ValueError, KeyError, TypeError):
            return None  # unreadable: as if evicted (placement restarts from where the route points)
        return state if all(math.isfinite(v) for _, v in state.samples) else None


@dataclass(frozen=True)
class Warmth:
    """One warmth candidate. kind: `forecast` (min-scale from the forecast at `price`, with
    Knative's retention of `tail` minutes on top when `tail` > 0),
    `keepalive` (warm until `tail` minutes after the last request), `hybrid` (min-scale 0 for
    `head` minutes after the last request, then warm until `tail`), `timeofday` (warm in the
    10-minute slots of the day whose past days were active often enough at `price`), `knative`."""

    kind: str
    price: float = 0.0
    head: int = 0
    tail: int = 0
    slots: frozenset[int] = frozenset()

    @property
    def label(self) -> str:
        if self.kind == "forecast":
            return f"forecast cost={self.price:g}" + (f" + keepalive {self.tail} min" if self.tail else "")
        if self.kind == "keepalive":
            return f"keepalive {self.tail} min"
        if self.kind == "hybrid":
            return f"hybrid {self.head}-{self.tail} min"
        if self.kind == "timeofday":
            return f"timeofday {len(self.slots)} slots"
        return self.kind

    def to_json(self) -> dict:
        return {"kind": self.kind, "price": self.price, "head": self.head, "tail": self.tail, "slots": sorted(self.slots)}

    @classmethod
    def from_json(cls, data: dict) -> "Warmth":
        return cls(str(data["kind"]), float(data.get("price", 0)), int(data.get("head", 0)), int(data.get("tail", 0)),
                   frozenset(int(s) for s in data.get("slots") or []))


@dataclass
class TierState:
    warmth: Warmth | None = None
    chosen_at_s: float | None = None
    last_active_minute: int | None = None
    """The last minute the tier had a request (from the history: the keep-alive's clock)."""
    price: float | None = None
    """The fleet budget's price when one is set."""
    spent_s: float = 0.0
    """The fleet budget's account: the pod-seconds the warmth in force is estimated to have held
    since the budget began (each period re-estimated on its own minutes once it is history)..."""
    allowed_s: float = 0.0
    """...and b x per-model Knative's over the same minutes. Their difference (bounded: see
    `_update_choice`) is paid back over the next choices, so the spend tracks the budget over the
    whole run, not day by day."""

    def to_json(self) -> str:
        return json.dumps({"warmth": self.warmth.to_json() if self.warmth else None, "chosen_at_s": self.chosen_at_s,
                           "last_active_minute": self.last_active_minute, "price": self.price,
                           "spent_s": self.spent_s, "allowed_s": self.allowed_s})

    @classmethod
    def from_json(cls, raw: bytes | str) -> "TierState":
        try:
            data = json.loads(raw)
            warmth = Warmth.from_json(data["warmth"]) if data.get("warmth") else None
            last = data.get("last_active_minute")
            return cls(warmth, _opt(data.get("chosen_at_s")), None if last is None else int(last), _opt(data.get("price")),
                       float(data.get("spent_s") or 0.0), float(data.get("allowed_s") or 0.0))
        except (ValueError, KeyError, TypeError):
            return cls()


# -- settings ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class PoolPlanSettings:
    placement: PlacementSettings = field(default_factory=PlacementSettings)
    every_minutes: int = 10
    """Placement is evaluated on minutes that are a multiple of this."""
    cost: float = 300.0
    """The user's price of a cold-start request in pod-seconds (COLD_START_COST_POD_SECONDS)."""
    cold_start_s: float = 5.0
    """For the minute-grain estimate: requests in the first seconds of a cold minute are cold."""
    choose_every_minutes: int = 1440
    """The warmth choice is remade on minutes that are a multiple of this (or when none is held)."""
    history_minutes: int = 7 * 1440
    keepalive_minutes: tuple[int, ...] = (1, 2, 5, 10, 20, 60, 180, 720)
    prices: tuple[float, ...] = (60.0, 120.0, 300.0, 600.0, 1200.0, 3000.0)
    hybrid: bool = True
    timeofday: bool = True
    forecast_keepalive_minutes: tuple[int, ...] = (1, 2, 5, 10)
    """Retentions combined with each forecast price: the forecast warms ahead of the requests it
    sees coming, the retention covers the short gaps it does not."""
    sizing: PolicySettings = field(default_factory=PolicySettings)
    """The policy that sizes a tier's pods from its forecast (capacity, burst risk, max-scale):
    the estimate prices a forecast candidate by the pods it holds."""
    load_time_share: float = LOAD_TIME_SHARE
    """Placement by memory: the pool keeps its models while the estimated share of its pods' time
    spent loading models (`load_time_share_of`) stays at or under this (LOAD_TIME_SHARE)."""
    fleet_budget: float | None = None
    """Spend b x per-model Knative's pod-seconds (estimated on the same history) instead of the
    user's price: at each choice, the candidate with the fewest estimated cold starts among those
    whose spend ratio to per-model Knative's on the recent history fits b, plus what the run has
    so far left unspent or overspent (`TierState.spent_s`, `allowed_s`; `choose_warmth`)."""
    not_ready_bound_s: float = 600.0
    """A mapping not programmed, or a dedicated Service unable to serve, for longer than this is
    reported and no longer holds anything warm; the model goes back to a tier that can serve."""
    dedicate: bool = True
    """Whether a model may leave the pool at all (placement by memory and load)."""


# -- the output --------------------------------------------------------------------------------
@dataclass
class ModelPlan:
    name: str
    routed: str
    decided: str
    action: str
    """placement.route_step's action; MOVE into the pool waits for the model to be loaded."""
    preload: bool = False
    rate_rps: float | None = None
    leaning_since: float | None = None
    reason: str | None = None
    fallback: bool = False
    """The move is forced: the routed tier cannot serve."""
    not_ready: bool = False
    """The mapping has not been programmed for longer than the bound: reported, not held for."""
    state: ModelState = field(kw_only=True)
    """What is kept for the next tick (always set: the plan is made from it)."""


@dataclass
class TierPlan:
    service: str
    forecast: list[MinuteForecast] | None
    """What decision.plan decides this Service's min-scale from (None: hold, `missing` says why)."""
    missing: str | None
    floor: int
    """min-scale this tick must not go below (a move's target, a draining source, a long keep-alive)."""
    price: float
    """The price decision.plan runs at (COLD_START_COST_POD_SECONDS for this tier)."""
    retention: str | None
    """RETENTION's value on the routed Revisions (None: the Service template's own, restored)."""
    warmth: str
    reason: str
    idle: bool = False
    """A dedicated Service nothing routes to: its forecast is idle (it goes to zero)."""


@dataclass
class PoolPlan:
    models: dict[str, ModelPlan]
    tiers: dict[str, TierPlan]
    tier_states: dict[str, TierState]
    members: list[str]
    without_forecast: list[str]
    not_ready: list[str]


# -- the plan ----------------------------------------------------------------------------------
def choice_due(state: TierState | None, now_s: float, settings: PoolPlanSettings) -> bool:
    """Whether this tick remakes the tier's warmth choice (the caller then reads the history)."""
    if state is None or state.warmth is None or state.chosen_at_s is None:
        return True
    minute = int(now_s // 60)
    return minute % settings.choose_every_minutes == 0 and now_s > state.chosen_at_s


def plan_pool(view: PoolView, forecasts: Mapping[str, Sequence[MinuteForecast] | None],
              states: Mapping[str, ModelState | None], tier_states: Mapping[str, TierState],
              history: Mapping[str, TierHistory], settings: PoolPlanSettings, now_s: float,
              fresh: bool = True) -> PoolPlan:
    """The whole plan for one pool (see the module docstring). `forecasts[model]` None or absent:
    no forecast (holds); `history[tier]` only where `choice_due` said so; `fresh` False when the
    event is too old to move on (placement holds, no route changes)."""
    evaluate = fresh and int(now_s // 60) % settings.every_minutes == 0
    capacity = capacity_models(view)
    plans: dict[str, ModelPlan] = {}
    rates: dict[str, float] = {}
    for m in view.models:
        state = states.get(m.name) or ModelState(-math.inf, m.routed)
        samples = state.samples
        first = 0
        while first < len(samples) and samples[first][0] <= now_s - 3600:
            first += 1  # kept in time order: the hour's window drops from the front
        samples = samples[first:]
        if samples and samples[-1][0] >= now_s:
            samples = [s for s in samples if s[0] < now_s]
        f = forecasts.get(m.name)
        if fresh and f:
            samples.append((now_s, f[0].point_rps))
        rate = expected_rate(samples, now_s) if evaluate else math.nan
        rates[m.name] = rate
        current = Placement(state.tier, state.leaning_since)
        decided = place(rate, current, now_s, settings.placement) if evaluate and settings.dedicate else current
        if not settings.dedicate:
            decided = Placement(POOL, None)
        reason = None
        if decided.tier == DEDICATED and not m.dedicated_exists:
            decided = Placement(POOL, None)
            reason = (f"dedicated Service {m.dedicated!r} not found or not opted in: stays pooled" if m.dedicated
                      else "no dedicated-service annotation: stays pooled")
        unsettled = None if m.settled else (state.unsettled_since if state.unsettled_since is not None else now_s)
        failing = m.dedicated_failing or not m.dedicated_exists
        failing_since = (state.failing_since if state.failing_since is not None else now_s) if failing else None
        plans[m.name] = ModelPlan(m.name, m.routed, decided.tier, "", rate_rps=None if math.isnan(rate) else round(rate, 4),
                                  leaning_since=decided.leaning_since, reason=reason,
                                  state=ModelState(now_s, decided.tier, decided.leaning_since, samples, unsettled,
                                                   failing_since, state.fits_since if decided.tier == DEDICATED else None))
    _memory_rule(view, plans, rates, capacity, evaluate and settings.dedicate, settings.placement.capacity_rps,
                 view.model_load_s, settings.load_time_share, now_s, settings.placement.hold_minutes * 60.0)

    by_name = {m.name: m for m in view.models}
    for p in plans.values():
        m = by_name[p.name]
        bound = settings.not_ready_bound_s
        failing_for = now_s - p.state.failing_since if p.state.failing_since is not None else None
        unsettled_for = now_s - p.state.unsettled_since if p.state.unsettled_since is not None else None
        cannot_serve = m.routed == DEDICATED and (not m.dedicated_exists or m.draining or (
            m.dedicated_failing and failing_for is not None and failing_for >= bound))
        nothing = cannot_serve and not m.draining  # the route reaches no pod: a move waits for nothing
        if cannot_serve:
            # Issue 23: the route points at a tier that cannot serve. A route to nothing cannot
            # get worse, so the move back does not wait for the mapping to settle.
            p.decided, p.fallback = POOL, True
            p.state.tier, p.state.leaning_since = POOL, None
            p.leaning_since = None
            p.reason = (f"dedicated Service {m.dedicated!r} is being deleted (held until the route has left it)"
                        if m.draining
                        else f"dedicated Service {m.dedicated!r} is gone" if not m.dedicated_exists
                        else f"dedicated Service {m.dedicated!r} not Ready for {failing_for:.0f} s")
            p.reason += ": back to the pool"
        p.not_ready = not m.settled and unsettled_for is not None and unsettled_for >= bound and not cannot_serve
        # a route to nothing does not wait for the pool to be warm either: a cold pool's requests
        # wait in the activator while a pod starts and loads the model; nothing's are lost
        target_ready = (m.dedicated_ready if p.decided == DEDICATED else view.pool_warm or nothing)
        action = route_step(p.decided, m.routed, m.settled or cannot_serve, target_ready)
        if action == MOVE and not fresh:
            action, p.reason = "hold", "forecast too old to move on"
        p.action = action
        if p.not_ready:
            p.reason = (f"mapping not Ready for {unsettled_for:.0f} s: reported, "
                        "no longer held warm for")

    # -- pre-loads: every model about to move in, then the likeliest pooled ones ----------------
    wanted = [p.name for p in plans.values() if p.decided == POOL and p.routed != POOL]
    pooled = {p.name: f for p in plans.values()
              if p.routed == POOL and p.decided == POOL and (f := forecasts.get(p.name))}
    hot = preload(pooled, capacity, _threshold(settings.cost))
    for name in wanted + [n for n in hot if n not in wanted]:
        plans[name].preload = name not in view.loaded

    # -- the tiers' forecasts, floors and warmth ------------------------------------------------
    members = [p for p in plans.values() if p.routed == POOL or p.decided == POOL
               or (not by_name[p.name].settled and not p.not_ready)]
    with_data = [f for p in members if (f := forecasts.get(p.name))]
    missing = sorted(p.name for p in members if not forecasts.get(p.name))
    floor = 0
    if any((p.decided == POOL and p.routed != POOL) or (p.routed == POOL and not by_name[p.name].settled and not p.not_ready)
           for p in plans.values()):
        floor = 1  # a move into the pool needs a warm pod to load the model in
    if missing or any(p.routed != POOL and not by_name[p.name].settled and not p.not_ready and not p.fallback
                      for p in members):
        floor = max(floor, view.pool_current)  # no data, or a route still draining: never lower
    tiers: dict[str, TierPlan] = {}
    new_tier_states: dict[str, TierState] = {}
    pool_state = tier_states.get(view.pool) or TierState()
    pool_state = _update_choice(pool_state, history.get(view.pool), settings, now_s)
    new_tier_states[view.pool] = pool_state
    forecast = pooled_forecast(with_data) if with_data else None
    tiers[view.pool] = _warm_tier(view.pool, forecast, None if with_data or not members else
                                  "no forecast for any model routed to the pool", floor, pool_state, settings, now_s)
    # A dedicated tier keeps its model at least as warm as the pool did: the pool's Knative
    # retention rides on it too (its min-scale is the model's own forecast at the user's price),
    # so leaving the pool never trades the pool's keep-alive for scale-to-zero at the stable window.
    pool_retention = tiers[view.pool].retention
    for p in plans.values():
        m = by_name[p.name]
        if not m.dedicated or not m.dedicated_exists:
            continue
        serving = p.routed == DEDICATED or p.decided == DEDICATED or (not m.settled and not p.not_ready)
        f = forecasts.get(p.name)
        if serving:
            fc, why = (list(f), None) if f else (None, f"no forecast for model {p.name}")
        else:
            fc, why = list(IDLE), None
        dfloor = 0
        if (p.decided == DEDICATED and p.routed != DEDICATED) or (p.routed == DEDICATED and not m.settled and not p.not_ready):
            dfloor = 1
        if p.routed != DEDICATED and not m.settled and not p.not_ready:
            dfloor = max(dfloor, view.dedicated_current.get(m.dedicated, 0))  # its route may still send requests
        retention = pool_retention if serving else None
        tiers[m.dedicated] = TierPlan(m.dedicated, fc, why, dfloor, settings.cost, retention,
                                      "forecast" + (f" + keepalive {retention}" if retention else ""),
                                      ("dedicated: forecast at the user's price"
                                       + (", the pool's keep-alive (no colder than in the pool)" if retention else ""))
                                      if serving else "not serving: idle",
                                      idle=not serving)
    return PoolPlan(plans, tiers, new_tier_states, sorted(p.name for p in members), missing,
                    sorted(p.name for p in plans.values() if p.not_ready))


def capacity_models(view: PoolView) -> int:
    return max(1, view.capacity_models)


def _memory_rule(view: PoolView, plans: dict[str, ModelPlan], rates: Mapping[str, float], capacity: int,
                 evaluate: bool, capacity_rps: float, load_s: float = DEFAULT_MODEL_LOAD_S, bound: float = LOAD_TIME_SHARE,
                 now_s: float = 0.0, hold_s: float = 3600.0) -> None:
    """Placement by memory: a model that placement would dedicate (its rate keeps a pod busy,
    with hysteresis) leaves the pool only while the pool's pods would spend too much of their time
    loading models: the estimated share (`load_time_share_of`: loads/s x `load_s` over the pods)
    is above `bound`. Knative spreads requests over the pool's pods, so each pod sees every model
    at its rate over the pods, and keeps the `capacity` least recently used. While the share is
    small, sharing the pool's warm pods and headroom beats a Service of one's own (a load costs a
    pod `load_s`; a Service of its own, its own cold starts, bursts and idle headroom); beyond it,
    the busiest leave first, only as many as it takes."""
    if not evaluate:
        return
    rps = {n: max(0.0, rates[n]) if math.isfinite(rates[n]) else 0.0 for n in plans}
    wanting = sorted((p for p in plans.values() if p.decided == DEDICATED and p.routed == POOL),
                     key=lambda p: -rps[p.name])
    staying = [p.name for p in plans.values() if p.decided == POOL or p in wanting]

    def time_share(names: Sequence[str]) -> float:
        return load_time_share_of([rps[n] for n in names], capacity, capacity_rps, load_s)

    # the fewest of the busiest whose leaving brings the pool's time loading within the bound;
    # none when no number of them would (the pool is short of memory for its sparse models, which
    # no dedicated Service mends)
    leave = None
    for k in range(len(wanting) + 1):
        gone = {p.name for p in wanting[:k]}
        if time_share([n for n in staying if n not in gone]) <= bound:
            leave = k
            break
    share = time_share(staying)
    about = f"{capacity} models a pod, {load_s * 1000:g} ms a load"
    for i, p in enumerate(wanting):
        if leave is not None and i < leave:
            staying.remove(p.name)
            p.reason = (f"the pool's pods would spend ~{share:.2%} of their time loading models ({about}), over "
                        f"{bound:.0%}: the busiest leave" + (f" ({leave} of them)" if leave > 1 else ""))
            continue
        p.decided, p.leaning_since = POOL, None
        p.state.tier, p.state.leaning_since = POOL, None
        p.reason = (f"the pool holds its working set (its pods ~{share:.2%} of their time loading models, "
                    f"{about}; bound {bound:.0%}): stays pooled" if share <= bound else
                    f"the pool's pods would spend ~{share:.2%} of their time loading models ({about}), and no "
                    f"dedicated Service would bring that within {bound:.0%}: stays pooled")
    # Hysteresis: a dedicated model comes back, quietest first, once the pool would have held it
    # with its time loading at half the bound for as long as placement's hold (its rate band may
    # still call it busy; a model the band already leans back is the band's to move).
    out = [p for p in plans.values() if p.decided == DEDICATED and p.routed == DEDICATED and p.leaning_since is None]
    for p in sorted(out, key=lambda p: rps[p.name]):
        share = time_share(staying + [p.name])
        if share > bound / 2 or not math.isfinite(rates[p.name]):
            p.state.fits_since = None
            continue
        since = p.state.fits_since if p.state.fits_since is not None else now_s
        p.state.fits_since = since
        if now_s - since >= hold_s:
            staying.append(p.name)
            p.decided, p.leaning_since = POOL, None
            p.state.tier, p.state.leaning_since, p.state.fits_since = POOL, None, None
            p.reason = (f"the pool holds its working set with it (its pods ~{share:.2%} of their time loading "
                        f"models, {about}; within half the bound {bound:.0%}): back to the pool")


def pool_pods(rates_rps: Sequence[float], capacity_rps: float) -> float:
    """The pods Knative holds for the pool's load at its target (at least one)."""
    return max(1.0, math.ceil(sum(r for r in rates_rps if r > 0) / (TARGET_UTILIZATION * capacity_rps)))


def load_rate_of(rates_rps: Sequence[float], capacity: int, capacity_rps: float) -> float:
    """Model loads per second in a pool of these models at steady state: Knative spreads the
    pool's load over P = total / (TARGET_UTILIZATION x capacity_rps) pods (`pool_pods`), so a pod
    sees model i at rate l_i = r_i / P; each pod keeps `capacity` models, least recently used out.
    Che's approximation of an LRU cache (Che, Tung and Wang, 2002): the characteristic time T
    solves sum_i (1 - exp(-l_i T)) = capacity, and a request of model i loads it with probability
    exp(-l_i T). 0 when every model fits."""
    active = [r for r in rates_rps if r > 0]
    if len(active) <= capacity:
        return 0.0
    pods = pool_pods(active, capacity_rps)
    lam = [r / pods for r in active]

    def held(t: float) -> float:
        return sum(-math.expm1(-x * t) for x in lam)

    lo, hi = 0.0, 1.0
    while held(hi) < capacity and hi < 1e12:
        hi *= 2.0
    for _ in range(50):
        mid = (lo + hi) / 2.0
        lo, hi = (mid, hi) if held(mid) < capacity else (lo, mid)
    t = (lo + hi) / 2.0
    return pods * sum(x * math.exp(-x * t) for x in lam)


def load_time_share_of(rates_rps: Sequence[float], capacity: int, capacity_rps: float, load_s: float) -> float:
    """The share of the pool pods' time spent loading models: `load_rate_of` x `load_s` over the
    pods Knative holds at its target (`pool_pods`)."""
    loads = load_rate_of(rates_rps, capacity, capacity_rps)
    return loads * max(0.0, load_s) / pool_pods(rates_rps, capacity_rps) if loads else 0.0


def _threshold(price: float) -> float:
    return min(1.0, 60.0 / price) if price > 0 else 1.0


def _warm_tier(service: str, forecast: list[MinuteForecast] | None, missing: str | None, floor: int, state: TierState,
               settings: PoolPlanSettings, now_s: float) -> TierPlan:
    """The tier's min-scale input and keep-alive annotation from its chosen warmth."""
    w = state.warmth or Warmth("forecast", settings.cost)
    minute = int(now_s // 60)
    retention = None
    price = state.price if state.price is not None and w.kind == "forecast" else (w.price or settings.cost)
    reason = f"warmth {w.label}"
    fc = forecast
    if w.kind != "forecast" and fc is not None:
        fc = [MinuteForecast(f.point_rps, f.upper_rps, 0.0) for f in fc]  # sizing only: P(any) warms no pod here
    since = None if state.last_active_minute is None else minute - state.last_active_minute
    if w.kind in ("keepalive", "forecast") and 0 < w.tail <= RETENTION_MAX_MINUTES:
        retention = f"{w.tail * 60}s"
        reason += ": Knative's scale-to-zero-pod-retention-period"
    elif w.kind in ("keepalive", "hybrid") and since is not None and w.head <= since < w.tail:
        floor = max(floor, 1)
        reason += f": held at 1 ({since} min since the last request)"
    elif w.kind == "timeofday" and (minute % 1440) // 10 in w.slots:
        floor = max(floor, 1)
        reason += ": a warm slot of the day"
    return TierPlan(service, fc, missing, floor, price, retention, w.label, reason)


def _update_choice(state: TierState, history: TierHistory | None, settings: PoolPlanSettings, now_s: float) -> TierState:
    if history is None:
        return state
    last = state.last_active_minute
    for i in range(len(history.counts) - 1, -1, -1):
        c = history.counts[i]
        if c:
            last = history.start_minute + i
            break
    state = replace(state, last_active_minute=last)
    if not choice_due(state, now_s, settings):
        return state
    if settings.fleet_budget is not None and state.warmth is not None and state.chosen_at_s is not None:
        # the period just ended is history now: book what its warmth held against its allowance
        i = max(0, int(state.chosen_at_s // 60) - history.start_minute)
        if i < len(history.counts) and len(history.per_model) == len(history.counts):
            pod_minutes = float(sum(history.per_model[i:]))
            # estimated on the whole history, counting the period's minutes only: a keep-alive
            # still running from the minutes before the period holds its pod into it
            period = [0.0] * i + [1.0] * (len(history.counts) - i)
            spent = state.spent_s + estimate(history, state.warmth, settings, weights=period)[0]
            allowed = state.allowed_s + settings.fleet_budget * pod_minutes * 60.0
            # the balance is bounded by what the pay-back can move (`budget_target`): a surplus
            # the dearest candidate could not spend, or a debt the cheapest could not save, is
            # not carried into a future it no longer describes
            cap = _payback_periods(settings) * settings.fleet_budget * _period_allowance(history, settings)
            allowed = spent + min(cap, max(-cap, allowed - spent))
            state = replace(state, spent_s=spent, allowed_s=allowed)
    warmth, price = choose_warmth(history, settings, state.allowed_s - state.spent_s)
    return replace(state, warmth=warmth, chosen_at_s=now_s, price=price)


def note_observed(state: TierState, observed: Mapping[str, tuple[int, Sequence[float | None]]],
                  members: Sequence[str]) -> TierState:
    """The keep-alive's clock: the last minute any member had a request, from the minutes this
    event observed (the history sets it too when read)."""
    last = state.last_active_minute
    for name in members:
        seen = observed.get(name)
        if not seen:
            continue
        start, counts = seen
        for i in range(len(counts) - 1, -1, -1):
            if counts[i]:
                if last is None or start + i > last:
                    last = start + i
                break
    return state if last == state.last_active_minute else replace(state, last_active_minute=last)


# -- the choice --------------------------------------------------------------------------------
def candidates(history: TierHistory, settings: PoolPlanSettings) -> list[Warmth]:
    # the user's price first: on a tie (a short or silent history) the default stands
    out = [Warmth("forecast", float(settings.cost))]
    out += [Warmth("forecast", float(p)) for p in sorted(set(settings.prices) - {settings.cost})]
    keepalives = sorted(set(settings.keepalive_minutes) | (set(BUDGET_KEEPALIVE_MINUTES) if settings.fleet_budget is not None
                                                            else set()))
    out += [Warmth("keepalive", tail=k) for k in keepalives]
    out += [Warmth("forecast", float(p), tail=k) for p in sorted(set(settings.prices) | {settings.cost})
            for k in settings.forecast_keepalive_minutes if 0 < k <= RETENTION_MAX_MINUTES]
    if settings.hybrid:
        h = hybrid_window(history.counts)
        if h is not None:
            out.append(Warmth("hybrid", head=h[0], tail=h[1]))
    if settings.timeofday:
        for price in sorted(set(settings.prices) | {settings.cost}):
            slots = warm_slots(history, price)
            if slots:
                out.append(Warmth("timeofday", price=price, slots=slots))
    return out


def choose_warmth(history: TierHistory, settings: PoolPlanSettings, carry_s: float = 0.0) -> tuple[Warmth, float | None]:
    """The candidate cheapest on the history at the user's price (pod-seconds + price x cold-start
    requests, estimated at minute grain), or with a fleet budget the one with the fewest estimated
    cold starts whose spend *ratio* fits the budget (`budget_target`); the cheapest when none
    fits. History only.

    Why a ratio: a fleet's spend grows and shrinks with its traffic (new models, busy and quiet
    days), and pooling pays more the more of its models are active at once: a pooled 20-minute
    keep-alive can cost several times per-model Knative's spend on a few sparse days and less
    than it on busy ones. An allowance in pod-seconds from past days is then the wrong size for
    the next one; the ratio of each candidate's spend to per-model Knative's on the same minutes
    (both estimated at minute grain from the same counts) cancels the traffic's level, and
    weighting the minutes by recency (half-life: one choice period) makes it the ratio of the
    fleet as it is now, not as it was a week ago. Keep-alives of every minute up to Knative's
    1-hour retention make the ratios a near-continuous curve, so the choice lands near the budget
    without mixing two candidates in time (which would flip the Revisions' annotation within a
    period). What the estimate still gets wrong is booked into the account (`TierState.spent_s`,
    `allowed_s`) and paid back over the history's span (`_payback_periods`)."""
    if not any(c is not None for c in history.counts):
        return Warmth("forecast", settings.cost), None  # nothing observed yet: the forecast at the user's price
    cands = candidates(history, settings)
    pods = minute_pods_of(history, settings)
    if settings.fleet_budget is not None and history.per_model_pod_minutes:
        weights, per_model_s = _recent(history, settings)
        scores = [estimate(history, w, settings, pods, weights) for w in cands]
        target = budget_target(history, settings, carry_s)
        fits = [i for i, (pod_s, _) in enumerate(scores) if pod_s <= target * per_model_s]
        if fits:
            best = min(fits, key=lambda i: (scores[i][1], scores[i][0]))
        else:
            best = min(range(len(cands)), key=lambda i: scores[i][0])
        return cands[best], None
    scores = [estimate(history, w, settings, pods) for w in cands]
    best = min(range(len(cands)), key=lambda i: scores[i][0] + settings.cost * scores[i][1])
    return cands[best], None


def budget_target(history: TierHistory, settings: PoolPlanSettings, carry_s: float = 0.0) -> float:
    """The ratio to per-model Knative's spend the next period may spend: the budget, plus the
    account's balance (`carry_s`: unspent, negative when overspent) spread over the history's
    span in periods (`_payback_periods`) of the recent per-model spend, within 0 and twice the
    budget (a balance pays back at most the budget's own rate again each period)."""
    b = settings.fleet_budget or 0.0
    period = _period_allowance(history, settings)
    if period <= 0:
        return b
    return b + min(b, max(-b, carry_s / (_payback_periods(settings) * period)))


def _payback_periods(settings: PoolPlanSettings) -> float:
    """The fleet budget's balance is paid back over the history's span (a week by default): one
    period would swing each choice between the dearest and the cheapest candidate after a quiet
    or a busy day; the span is as far back as the choice itself looks."""
    return max(1.0, settings.history_minutes / max(1, settings.choose_every_minutes))


def _recent(history: TierHistory, settings: PoolPlanSettings) -> tuple[list[float] | None, float]:
    """(per-minute weights, per-model Knative's weighted pod-seconds): weights halving every
    choice period back from the newest minute; None (every minute alike) when the history keeps
    no per-minute per-model spend."""
    n = len(history.counts)
    if len(history.per_model) != n or n == 0:
        return None, float(history.per_model_pod_minutes or 0.0) * 60.0
    decay = 0.5 ** (1.0 / max(1, settings.choose_every_minutes))
    weights = [decay ** (n - 1 - i) for i in range(n)]
    return weights, 60.0 * sum(w * pm for w, pm in zip(weights, history.per_model))


def _period_allowance(history: TierHistory, settings: PoolPlanSettings) -> float:
    """Per-model Knative's pod-seconds over one choice period at the history's recent rate."""
    weights, per_model_s = _recent(history, settings)
    n = len(history.counts)
    total = sum(weights) if weights is not None else float(n)
    return per_model_s / total * settings.choose_every_minutes if total > 0 else 0.0


def estimate(history: TierHistory, w: Warmth, settings: PoolPlanSettings,
             pods: tuple[list[int], list[int]] | None = None,
             weights: Sequence[float] | None = None) -> tuple[float, float]:
    """(pod-seconds, cold-start requests) of candidate `w` over the history, at minute grain, as
    Knative applies it: a pod stays through the minute after a request (the 60 s stable window,
    then the 30 s grace), a retention keeps it `tail` minutes more; min-scale 1 keeps one; a
    minute with requests and no pod has its first `cold_start_s` seconds' requests cold. Pods are
    counted as held: a minute's load holds what Knative alone scales to (`minute_pods`), and a
    minute the forecast candidate warms holds what the forecast sized (its upper quantile), so
    that forecast-driven sizing is priced, not counted as one pod. `pods`: `minute_pods` of the
    history, computed once for every candidate; `weights`: each minute's weight (the fleet
    budget's recency), 1 when None."""
    knative, sized = pods if pods is not None else minute_pods_of(history, settings)
    threshold = _threshold(w.price) if w.kind == "forecast" else 2.0
    cold_share = min(1.0, settings.cold_start_s / 60.0)
    last = None
    pod_min = 0.0
    cold = 0.0
    start = history.start_minute
    keep = w.tail if w.kind in ("keepalive", "forecast") else 0
    for i, c in enumerate(history.counts):
        m = start + i
        since = None if last is None else m - last
        p = history.p_any[i] if i < len(history.p_any) else None
        held = False
        if w.kind == "forecast":
            held = p is not None and p >= threshold
        elif w.kind == "hybrid":
            held = since is not None and w.head <= since < w.tail
        elif w.kind == "timeofday":
            held = (m % 1440) // 10 in w.slots
        warm = held or (since is not None and since <= 1 + keep)
        floor = sized[i] if held and w.kind == "forecast" else (1 if warm else 0)
        wt = 1.0 if weights is None else weights[i]
        if c:
            if not warm:
                cold += wt * (max(1.0, c * cold_share) if c >= 1 else c)
            last = m
            pod_min += wt * (max(knative[i], floor) - (0.0 if warm else COLD_MINUTE_SAVING))
        else:
            # the tail's pod goes halfway through its last minute (STABLE_TAIL)
            pod_min += wt * (STABLE_TAIL if not held and since == 1 + keep else floor)
    return pod_min * 60.0, cold


def minute_pods_of(history: TierHistory, settings: PoolPlanSettings) -> tuple[list[int], list[int]]:
    """Per minute of the history: the pods Knative alone holds for its requests (at least one
    in a minute with any, the load over TARGET_UTILIZATION of a pod), and the pods the forecast
    sizing holds when it warms (at least one; the recorded upper quantile through the policy's
    `minute_pods`)."""
    per_pod = 60.0 * TARGET_UTILIZATION * settings.sizing.capacity_rps
    knative = [0 if not c else max(1, math.ceil(c / per_pod - 1e-9)) for c in history.counts]
    uppers = list(history.upper) + [None] * (len(history.counts) - len(history.upper))
    sized = [1 if u is None else max(1, minute_pods(MinuteForecast(u, u, 1.0), settings.sizing)) for u in uppers]
    return knative, sized


def hybrid_window(counts: Sequence[float | None], head_pct: float = 5, tail_pct: float = 99,
                  range_min: int = 240) -> tuple[int, int] | None:
    """The hybrid histogram's (pre-warm, keep-alive) in minutes from the idle gaps of `counts`:
    the head and tail percentiles of the gaps within `range_min`, with 10% margins; None when
    too few gaps or too many beyond the range (the paper then falls back to a fixed keep-alive,
    which is a candidate of its own here)."""
    gaps = []
    last = None
    for i, c in enumerate(counts):
        if c:
            if last is not None and i - last > 1:
                gaps.append(i - last - 1)
            last = i
    if len(gaps) < 10:
        return None
    inside = sorted(g for g in gaps if g <= range_min)
    if len(inside) < 0.9 * len(gaps):
        return None
    head = inside[int(head_pct / 100 * (len(inside) - 1))]
    tail = inside[int(tail_pct / 100 * (len(inside) - 1))]
    return int(head * 0.9), max(1, int(math.ceil(tail * 1.1)))


def warm_slots(history: TierHistory, price: float) -> frozenset[int]:
    """Ten-minute slots of the day worth holding warm at `price`: warming a slot costs 600
    pod-seconds a day and saves a cold start on the days it is active after an idle gap, so a
    slot is warm when its share of past days with such a start x price exceeds 600."""
    days = len(history.counts) / 1440
    if days < 1:
        return frozenset()
    starts = [0] * 144
    prev_active = False
    for i, c in enumerate(history.counts):
        active = bool(c)
        if active and not prev_active:
            starts[((history.start_minute + i) % 1440) // 10] += 1
        prev_active = active
    return frozenset(s for s in range(144) if starts[s] / days * price > 600.0)


def _opt(value) -> float | None:
    return None if value is None else float(value)


def tier_history(now_minute: int, minutes: int, counts: Mapping[str, Mapping[int, float]],
                 p_any: Mapping[str, Mapping[int, float]], members: Sequence[str],
                 sizes: Mapping[str, Mapping[int, tuple[float, float]]] | None = None,
                 capacity_rps: float = 10.0) -> TierHistory:
    """A tier's history from its members' (the pool's: every model routed to it now) minute
    counts, covered P(any) and forecast (point, upper) in req/s (`sizes`: the covered minute with
    the largest upper), over the last `minutes` before `now_minute`, from the first observed
    minute on: the tier's requests are the members' sum, its P(any) the chance that any member
    has one (independent), its upper the members' as `placement.pooled_forecast` pools them, and
    per-model Knative's pod-minutes count each member's minutes with a request or right after
    one (the stable window), as many pods as its load holds. The backtest builds the same
    vectorised."""
    sizes = sizes or {}
    per_pod = 60.0 * TARGET_UTILIZATION * capacity_rps
    start = now_minute - minutes
    first = min((m for name in members for m in counts.get(name, {}) if start <= m < now_minute), default=now_minute)
    c_out: list[float | None] = []
    p_out: list[float | None] = []
    u_out: list[float | None] = []
    per_model = 0.0
    pm_out: list[float] = []
    for m in range(first, now_minute):
        before_total = per_model
        total: float | None = None
        idle, known = 1.0, False
        point, spread, sized = 0.0, 0.0, False
        for name in members:
            c = counts.get(name, {}).get(m)
            if c is not None:
                total = (total or 0.0) + c
                before = counts.get(name, {}).get(m - 1) or 0
                if c > 0:
                    per_model += max(1, math.ceil(c / per_pod - 1e-9)) - (0.0 if before > 0 else COLD_MINUTE_SAVING)
                elif before > 0:
                    per_model += STABLE_TAIL
            elif (counts.get(name, {}).get(m - 1) or 0) > 0:
                per_model += STABLE_TAIL
            p = p_any.get(name, {}).get(m)
            if p is not None:
                idle *= 1.0 - min(1.0, max(0.0, p))
                known = True
            s = sizes.get(name, {}).get(m)
            if s is not None:
                sized = True
                if s[1] > s[0]:  # pooled_forecast: a run-away mean sizes nothing
                    point += s[0]
                    spread += (s[1] - s[0]) ** 2
        pm_out.append(per_model - before_total)
        c_out.append(total)
        p_out.append(1.0 - idle if known else None)
        u_out.append(point + math.sqrt(spread) if sized else None)
    return TierHistory(first, c_out, p_out, float(per_model), u_out, pm_out)


def covered_size(forecast: Sequence[MinuteForecast] | None) -> tuple[float, float] | None:
    """(point, upper) in req/s of the covered minute with the largest upper: what a tier's
    history keeps of one member's forecast for pricing its sizing."""
    if not forecast:
        return None
    f = max(forecast[:LEAD_MINUTES], key=lambda f: f.upper_rps)
    return (f.point_rps, f.upper_rps)
