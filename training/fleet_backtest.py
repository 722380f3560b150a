"""Walk-forward backtest of a fleet: per-model Knative against the pooled design, same arrivals.

    python -m training.backtest --fleet FILE.csv [--cold-start-s 5] [--capacity-rps 10]
        [--max-scale 1000] [--fleet-budget 1.0] [--format table|json] [--plots DIR] [--sweep]

Walk-forward: the first two days are warm-up (simulated, not scored); before every later day the
forecaster (one global model, training/backtest.py's) is refitted on every series' minutes
before that day, and only then forecasts that day's minutes; placement, the pool's series and
every schedule follow from those forecasts and from counts already seen.

Designs scored (ratios to per-model Knative, `kpa`, in the same run):
- per model, one Knative Service each: `kpa`, `keepalive` (min-scale 1 until k idle minutes:
  Knative's scale-to-zero-pod-retention-period at minute grain), `hybrid_histogram` (Shahrad et
  al. 2020), `predictive_per_model` (today's policy on each model's forecast), `oracle_per_model`;
- pooled: the models placement puts in the pool (scale.placement: busy ones get their own
  Service, with hysteresis) share one Knative Service over the sum of their arrivals, whose pods
  load models on demand (`model_loads`, LRU within `models_per_pod`); `predictive` (the default:
  the pool and the dedicated Services pre-warmed by our policy), `pool_kpa` (Knative alone),
  `pool_keepalive` (the fixed keep-alive on the same pool), `oracle_pooled`, and with
  `--fleet-budget` the same plan with the pool plan's fleet budget (scale.pool_plan
  .choose_warmth: each day the candidate with the fewest estimated cold starts whose spend ratio
  to per-model Knative's on the recent history fits the budget plus the account's balance; 1.0 =
  what per-model Knative spends over the same minutes); `pool_all_kpa`: every model
  in one pool under Knative alone (no placement).
"""

from __future__ import annotations

import copy
import math
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from forecast.forecaster import RateForecaster
from scale.annotations import ServicePolicy
from scale.decision import MIN_SCALE, ServiceView, plan
from scale.fallback import FallbackSettings, Skill, forecast_helps, keepalive_forecast
from scale.min_scale_policy import LEAD_MINUTES, MinuteForecast, PolicySettings, p_any_in
from scale.placement import DEDICATED, MOVE, POOL, Placement, PlacementSettings, place
from scale.pool_plan import (BUDGET_KEEPALIVE_MINUTES, COLD_MINUTE_SAVING, RETENTION_MAX_MINUTES, STABLE_TAIL,
                             TARGET_UTILIZATION, ModelView, PoolPlanSettings, PoolView, TierHistory, TierState,
                             choice_due, note_observed, plan_pool)
from scale.pool_settings import PoolSettings
from tqdm import tqdm

from training import skill
from training.controllers import HybridHistogram, seasonal_naive_table
from training.fleet_sim import DAY_S, FleetRun, FleetSimConfig, LaneTotals, PoolModelCache, simulate_lanes
from training.fleet_trace import FleetTrace

DAY = 1440
DEFAULT_COST = 300.0
PLACE_EVERY_MINUTES = 10
PLACE_RATE_MINUTES = 60
POOL_KEEPALIVE_MINUTES = (1, 2, 5, 10, 20, 60, 180, 720)


@dataclass(frozen=True)
class FleetOptions:
    cold_start_s: int = 5
    capacity_rps: float = 10.0
    max_scale: int = 1000
    """Knative max-scale of every Service and the policy's upper bound."""
    cost: float = DEFAULT_COST
    models_per_pod: int = 64
    """A pool pod's memory budget in models (POOL_MEMORY_MB / model size)."""
    model_load_ms: float = PoolSettings.model_load_ms
    """A model's load time in a pool pod (`pool_model_load_ms`: what the scale function reads)."""
    fleet_budget: float | None = None
    sweep: bool = False
    horizon: int = 2
    warmup_days: int = 2
    seed: int = 0
    placement: PlacementSettings = field(default_factory=PlacementSettings)

    def plan_settings(self) -> PoolPlanSettings:
        """The pool plan's settings, as the scale function derives them (pool_placement.plan_settings)."""
        return PoolPlanSettings(placement=self.placement, every_minutes=PLACE_EVERY_MINUTES, cost=self.cost,
                                cold_start_s=float(self.cold_start_s),
                                sizing=PolicySettings(capacity_rps=self.capacity_rps, max_scale=self.max_scale))


@dataclass
class Forecasts:
    """Walk-forward forecasts of a set of series: arrays (series, minutes, horizon); row m is
    what was known at the start of minute m (NaN before the first scored day)."""

    point: np.ndarray
    upper: np.ndarray
    p_any: np.ndarray


class PolicySchedule:
    """The scale function's whole decision (scale.decision.plan, as training.controllers
    .PolicyController calls it) over one series' forecast rows, minute by minute, with its
    cool-down state carried along, for several prices at once. Minutes where P(any) of the
    covered minutes is under the warm threshold while min-scale is 0 skip the call: plan would
    keep 0 there (no window lever in the fleet backtest).

    Prices that agree on a minute share one call: the settings differ only in the price, and
    plan reads the price only through the warm threshold on P(any in the covered minutes) (the
    window lever is off), so prices whose state (min-scale, cool-down clock) is the same and
    whose threshold falls on the same side of that P get the same decision. On a busy series
    every price agrees nearly every minute."""

    def __init__(self, point: np.ndarray, upper: np.ndarray, p_any: np.ndarray, counts: np.ndarray | None = None,
                 fallback: FallbackSettings | None = None):
        """With `counts` (the series' minutes) and `fallback`, the scale function's fallback to the
        keep-alive: the rolling skill the forecast function would send (skill.rolling_skill over
        these forecasts) decides, minute by minute, as scale.decision.plan does."""
        self.point, self.upper, self.p_any = point, upper, p_any
        self.known = ~np.isnan(point[:, 0])
        self.counts, self.fallback, self.skills, self.first = counts, fallback, None, 0
        if counts is not None and fallback is not None and self.known.any():
            self.first = int(np.argmax(self.known))
            naive = seasonal_naive_table(counts, self.first, len(counts), 1).point[:, 0]
            self.skills = skill.rolling_skill(np.nan_to_num(point[self.first:, 0]), np.nan_to_num(p_any[self.first:, 0]),
                                              naive, counts, self.first)

    def _skill_at(self, m: int) -> Skill | None:
        i = m - self.first
        if self.skills is None or not 0 <= i < len(self.skills["minutes"]):
            return None
        return Skill(float(self.skills["brier_skill"][i]), float(self.skills["mase"][i]), int(self.skills["minutes"][i]))

    def fill(self, outs: list[np.ndarray], m0: int, m1: int, settings: list[PolicySettings],
             active: np.ndarray | None = None) -> None:
        if len({replace(s, cold_start_cost_pod_s=0.0) for s in settings}) > 1:
            raise ValueError("PolicySchedule runs prices in lockstep: the settings may differ in the price only")
        thresholds = [s.warm_threshold for s in settings]
        policies = [ServicePolicy(s, dry_run=False, user_window=None, may_set_window=False) for s in settings]
        state: list[tuple[int, float | None]] = [(0, None)] * len(settings)
        horizon = min(LEAD_MINUTES, self.point.shape[1])
        point, upper, p_any = self.point.tolist(), self.upper.tolist(), self.p_any.tolist()
        for m in range(m0, m1):
            if (active is not None and not active[m]) or not self.known[m]:
                if active is not None and not active[m]:
                    state = [(0, None)] * len(settings)
                for j, out in enumerate(outs):
                    out[m] = state[j][0]
                continue
            forecast = [MinuteForecast(point[m][h] / 60.0, upper[m][h] / 60.0, p_any[m][h]) for h in range(horizon)]
            covered = p_any_in(forecast)
            skill_now, observed = self._skill_at(m), None
            if self.fallback is not None and m > 0 and not forecast_helps(skill_now, self.fallback):
                observed = [None if np.isnan(c) else float(c)
                            for c in self.counts[max(0, m - self.fallback.keepalive_minutes):m]]
                covered = p_any_in(keepalive_forecast(observed, horizon, self.fallback))  # what plan will read
            decided: dict[tuple, tuple[int, float | None]] = {}
            for j, out in enumerate(outs):
                current, raised_at = state[j]
                warm = covered >= thresholds[j]
                if current == 0 and not warm:
                    out[m] = 0
                    continue
                key = (current, raised_at, warm)
                if key not in decided:
                    view = ServiceView(["revision"], {"revision": {MIN_SCALE: str(current)}})
                    p = plan(view, policies[j], forecast, m * 60.0, raised_at, skill=skill_now, observed=observed,
                             fallback=self.fallback)
                    decided[key] = (p.min_scale, p.raised_at_s)
                state[j] = decided[key]
                out[m] = state[j][0]


def keepalive_schedule(counts: np.ndarray, minutes: int) -> np.ndarray:
    """controllers.KeepAlive for many series at once: 1 while any of the last k minutes had a request."""
    c = np.concatenate((np.zeros((counts.shape[0], 1)), np.cumsum(np.nan_to_num(counts) > 0, axis=1)), axis=1)
    m = np.arange(counts.shape[1])
    recent = c[:, m] - c[:, np.maximum(0, m - minutes)]
    return (recent > 0).astype(np.int64)


def hybrid_schedule(counts: np.ndarray) -> np.ndarray:
    out = np.zeros(counts.shape, np.int64)
    for i, row in enumerate(counts):
        policy = HybridHistogram()
        for m in range(len(row)):
            out[i, m] = policy.control(m, row).min_scale
    return out


def oracle_schedule(peaks: np.ndarray, capacity_rps: float) -> np.ndarray:
    """controllers.OracleMinute from each minute's busiest second of the span it covers."""
    return np.where(peaks > 0, np.maximum(1, np.ceil(peaks / capacity_rps)), 0).astype(np.int64)


def walk_forward(counts: np.ndarray, fleet: FleetTrace, options: FleetOptions, members_of,
                 bar) -> tuple[Forecasts, Forecasts, np.ndarray, float]:
    """Per-model forecasts, placement, the pool's series and its forecasts, block by block (a
    day each). `members_of(forecasts)` gives the placement: a callable (block_start, block_end,
    per_minute) that decides it for the block from what was known at each minute and returns the
    pool's membership there."""
    n_models, n = counts.shape
    h = options.horizon
    nan = np.full((n_models, n, h), np.nan, np.float32)
    per_model = Forecasts(nan.copy(), nan.copy(), nan.copy())
    pool = Forecasts(*(np.full((1, n, h), np.nan, np.float32) for _ in range(3)))
    member = np.ones((n_models, n), bool)
    pool_counts = np.zeros(n)
    longest_fit = 0.0
    members_of = members_of(per_model)  # the placement, given the forecasts it will see
    warmup = options.warmup_days * DAY
    # Before the first forecast (the warm-up), placement goes by the counts already seen: the
    # minute before, as a forecast of the next.
    seen = np.concatenate((np.full((n_models, 1), np.nan), counts[:, :-1]), axis=1)
    member[:, :warmup] = members_of(0, warmup, seen[:, :warmup])
    for start in range(warmup, n, DAY):
        end = min(n, start + DAY)
        pool_counts[:start] = (counts[:, :start] * member[:, :start]).sum(axis=0)
        began = time.perf_counter()
        model = RateForecaster(horizon=h, random_state=options.seed).fit(
            list(counts[:, :start]) + [pool_counts[:start]], start_minute=fleet.start_minute)
        longest_fit = max(longest_fit, time.perf_counter() - began)
        origins = np.arange(start, end)
        for i in range(n_models):
            f = model.predict_origins(counts[i], origins, fleet.start_minute)
            per_model.point[i, start:end], per_model.upper[i, start:end], per_model.p_any[i, start:end] = f.point, f.upper, f.p_any
        member[:, start:end] = members_of(start, end, per_model.point[:, :end, 0])
        pool_counts[start:end] = (counts[:, start:end] * member[:, start:end]).sum(axis=0)
        f = model.predict_origins(pool_counts, origins, fleet.start_minute)
        pool.point[0, start:end], pool.upper[0, start:end], pool.p_any[0, start:end] = f.point, f.upper, f.p_any
        bar.update(1)
    return per_model, pool, member, longest_fit


class Placer:
    """scale.placement's rate band alone (no memory rule, no plan) over the fleet every
    PLACE_EVERY_MINUTES, for studies/sizing_study.py; fed each model's expected rate:
    the mean of its next-minute forecasts over the last hour, in req/s."""

    def __init__(self, n_models: int, settings: PlacementSettings):
        self.state = [Placement() for _ in range(n_models)]
        self.settings = settings
        self.moves = 0

    def __call__(self, start: int, end: int, per_minute: np.ndarray) -> np.ndarray:
        """Membership for minutes [start, end); `per_minute[:, m]` is each model's expected
        requests in minute m as known at its start (NaN: unknown)."""
        point = np.nan_to_num(per_minute.astype(float))
        known = ~np.isnan(per_minute)
        member = np.zeros((len(self.state), end - start), bool)
        cs = np.concatenate((np.zeros((point.shape[0], 1)), np.cumsum(point, axis=1)), axis=1)
        ck = np.concatenate((np.zeros((point.shape[0], 1)), np.cumsum(known, axis=1)), axis=1)
        for m in range(start, end):
            if (m - start) % PLACE_EVERY_MINUTES == 0:
                lo = max(0, m + 1 - PLACE_RATE_MINUTES)
                seen = ck[:, m + 1] - ck[:, lo]
                rate = np.where(seen > 0, (cs[:, m + 1] - cs[:, lo]) / np.maximum(seen, 1) / 60.0, np.nan)
                for i, r in enumerate(rate):
                    new = place(float(r), self.state[i], m * 60.0, self.settings)
                    self.moves += new.tier != self.state[i].tier
                    self.state[i] = new
            member[:, m - start] = [p.tier == "pool" for p in self.state]
        return member



class PoolPlanDriver:
    """The scale function's pool plan (scale.pool_plan.plan_pool), minute by minute over the
    fleet, exactly as the function calls it each tick, followed by decision.plan on each tier as
    the scaler then calls it: the default row is this, what a cluster runs.

    What it hands the plan is what the deployed function has at the start of minute m: each
    model's forecast made then (the walk-forward forecaster's, horizon 2), the requests observed
    in minute m-1 (the forecast event's `observed` block), the bounded minute history (per-model
    counts and covered P(any), `history_minutes` back) when a warmth choice is due, its own state
    from the minute before. The cluster is taken as answering at once: a move's target is ready
    and programmed (routes, pods and loads are the simulator's business), except that a move to a
    dedicated Service waits, as the function's does, for that Service to be ready: it is taken as
    ready once the plan has held it above zero for a minute (longer than a cold start). Several settings (the default, the fleet budget) run in lockstep;
    placement does not depend on warmth, so they share the routes of the first."""

    def __init__(self, counts: np.ndarray, per_model: "Forecasts", names: list[str], variants: list[PoolPlanSettings],
                 options: "FleetOptions", minute0: int = 0, policy: PolicySettings | None = None):
        """`counts[i, m]`: model i's requests in minute m, the fleet's minute 0 being `minute0` since
        the epoch (the clock the plan sees); `policy`: the scale function's policy settings (the
        fleet's capacity, max-scale and the user's price by default)."""
        self.counts, self.fc, self.names = counts, per_model, names
        self.variants, self.options = variants, options
        self.minute0 = minute0
        self.policy = policy or PolicySettings(capacity_rps=options.capacity_rps, cold_start_cost_pod_s=options.cost,
                                               max_scale=options.max_scale)
        n_models, n = counts.shape
        self.n = n
        self.routed = [POOL] * n_models
        self.states: list[dict] = [{} for _ in variants]
        self.tier_states: list[dict] = [{} for _ in variants]
        self.current = [dict() for _ in variants]  # service -> (min-scale, raised_at)
        self.pool_min = [np.zeros(n, np.int64) for _ in variants]
        self.pool_keep = [np.zeros(n, np.int64) for _ in variants]
        self.ded_min = [np.zeros((n_models, n), np.int64) for _ in variants]
        self.ded_keep = [np.zeros((n_models, n), np.int64) for _ in variants]
        self._warm_ded: tuple[bool, ...] = ()
        self.member = np.ones((n_models, n), bool)
        self.moves = 0
        self.in_force: list[dict[str, int]] = [{} for _ in variants]
        self.warmth: list[list[str]] = [[""] * n for _ in variants]  # the pool's warmth label, minute by minute
        self.scored_from = options.warmup_days * DAY
        # covered P(any) of each model at each minute (the history's forecast column), NaN: none
        h = min(LEAD_MINUTES, per_model.p_any.shape[2])
        miss = np.ones(per_model.p_any.shape[:2], np.float64)
        for k in range(h):
            miss *= 1.0 - np.clip(np.nan_to_num(per_model.p_any[:, :, k].astype(np.float64), nan=0.0), 0.0, 1.0)
        self.p_cov = np.where(np.isnan(per_model.p_any[:, :, 0]), np.nan, 1.0 - miss)
        # pool_plan.covered_size: (point, upper) req/s of the covered minute with the largest upper
        up = per_model.upper[:, :, :h].astype(np.float64) / 60.0
        k = np.argmax(np.nan_to_num(up, nan=-np.inf), axis=2)[:, :, None]
        self.size_upper = np.take_along_axis(up, k, axis=2)[:, :, 0]
        self.size_point = np.take_along_axis(per_model.point[:, :, :h].astype(np.float64) / 60.0, k, axis=2)[:, :, 0]
        self.dedicated = {i: f"{names[i]}-dedicated" for i in range(n_models)}
        self.index = {name: i for i, name in enumerate(names)}
        self._views = None
        self._all = frozenset(names)
        self.seconds = 0.0

    def history(self, m: int, members: list[int], settings: PoolPlanSettings) -> TierHistory:
        """pool_plan.tier_history, vectorised (a test holds the two equal)."""
        first = max(0, m - settings.history_minutes)  # every minute of a replayed fleet was observed
        if m == first or not members:
            return TierHistory(self.minute0 + m, [], [], 0.0)
        c = self.counts[members, first:m]
        total = c.sum(axis=0)
        p = self.p_cov[members, first:m]
        known = ~np.isnan(p)
        idle = np.where(known, 1.0 - p, 1.0).prod(axis=0)
        p_out = np.where(known.any(axis=0), 1.0 - idle, np.nan)
        prev = self.counts[members, first - 1:m - 1] if first > 0 else np.concatenate(
            (np.zeros((len(members), 1)), self.counts[members, first:m - 1]), axis=1)
        per_pod = 60.0 * TARGET_UTILIZATION * settings.sizing.capacity_rps
        pods = np.where(c > 0, np.maximum(1, np.ceil(c / per_pod - 1e-9)) - np.where(prev > 0, 0.0, COLD_MINUTE_SAVING),
                        np.where(prev > 0, STABLE_TAIL, 0.0))
        per_model = float(pods.sum())
        sp, su = self.size_point[members, first:m], self.size_upper[members, first:m]
        sized = ~np.isnan(su)
        backed = sized & (su > sp)
        pooled = np.where(backed, sp, 0.0).sum(axis=0) + np.sqrt(np.where(backed, (su - sp) ** 2, 0.0).sum(axis=0))
        upper = [float(u) if k else None for u, k in zip(pooled.tolist(), sized.any(axis=0).tolist())]
        return TierHistory(self.minute0 + first, total.tolist(), [None if math.isnan(v) else float(v) for v in p_out],
                           per_model, upper, pods.sum(axis=0).tolist())

    def __call__(self, start: int, end: int, _per_minute: np.ndarray | None = None) -> np.ndarray:
        began = time.perf_counter()
        try:
            return self._advance(start, end)
        finally:
            self.seconds += time.perf_counter() - began

    def _advance(self, start: int, end: int) -> np.ndarray:
        fc = self.fc
        h = min(LEAD_MINUTES, fc.point.shape[2])
        n_models = len(self.names)
        for m in range(start, end):
            now_s = (self.minute0 + m) * 60.0
            point, upper, p_any = fc.point[:, m, :h], fc.upper[:, m, :h], fc.p_any[:, m, :h]
            known = ~np.isnan(point[:, 0])
            rows = np.flatnonzero(known)
            forecasts: dict[str, list | None] = dict.fromkeys(self.names)
            if len(rows):
                pt, up, pa = (point[rows] / 60.0).tolist(), (upper[rows] / 60.0).tolist(), p_any[rows].tolist()
                for j, i in enumerate(rows):
                    forecasts[self.names[i]] = [MinuteForecast(pt[j][k], up[j][k], pa[j][k]) for k in range(h)]
            observed = {}
            if m > 0:
                for i in np.flatnonzero(self.counts[:, m - 1]):
                    observed[self.names[i]] = (self.minute0 + m - 1, (float(self.counts[i, m - 1]),))
            warm_ded = tuple((self.ded_min[0][:, m - 1] > 0).tolist()) if m > 0 else (False,) * n_models
            if self._views is None or warm_ded != self._warm_ded:
                self._warm_ded = warm_ded
                self._views = [ModelView(self.names[i], self.routed[i], self.dedicated[i], True,
                                         self.routed[i] == DEDICATED or warm_ded[i], False, True)
                               for i in range(n_models)]
            views = self._views
            routed_next = None
            for v, settings in enumerate(self.variants):
                view = PoolView("pool", views, True, self._all, self.current[v].get("pool", (0, None))[0],
                                {}, self.options.models_per_pod, self.options.model_load_ms / 1000.0)
                tier_state = self.tier_states[v].get("pool")
                history = {}
                if choice_due(tier_state, now_s, settings):
                    members = [i for i in range(n_models) if self.routed[i] == POOL]
                    history["pool"] = self.history(m, members, settings)  # minutes since the fleet's start
                tiers = {"pool": note_observed(tier_state or TierState(), observed,
                                               [n for i, n in enumerate(self.names) if self.routed[i] == POOL])}
                out = plan_pool(view, forecasts, self.states[v], tiers, history, settings, now_s, True)
                self.states[v] = {name: p.state for name, p in out.models.items()}
                self.tier_states[v] = out.tier_states
                if routed_next is None:
                    routed_next = [out.models[name].decided if out.models[name].action == MOVE else self.routed[i]
                                   for i, name in enumerate(self.names)]
                for service, tier in out.tiers.items():
                    min_scale = self._decide(v, service, tier, settings, now_s)
                    if service == "pool":
                        self.pool_min[v][m] = min_scale
                        self.pool_keep[v][m] = _seconds(tier.retention)
                        self.warmth[v][m] = tier.warmth
                        if m >= self.scored_from:
                            self.in_force[v][tier.warmth] = self.in_force[v].get(tier.warmth, 0) + 1
                    else:
                        i = self.index[service[:-len("-dedicated")]]
                        if min_scale:
                            self.ded_min[v][i, m] = min_scale
                        self.ded_keep[v][i, m] = _seconds(tier.retention)
            changed = sum(1 for a, b in zip(self.routed, routed_next) if a != b)
            if changed:
                self.moves += changed
                self._views = None
            self.routed = routed_next
            self.member[:, m] = [r == POOL for r in self.routed]
        return self.member[:, start:end]

    def _decide(self, v: int, service: str, tier, settings: PoolPlanSettings, now_s: float) -> int:
        """decision.plan for one tier, as the scaler calls it with the placement's policy_for."""
        current, raised_at = self.current[v].get(service, (0, None))
        if current == 0 and tier.floor == 0 and tier.idle:
            return 0  # an idle dedicated Service at 0: plan keeps it there (skipped for speed)
        base = replace(self.policy, cold_start_cost_pod_s=tier.price)
        if tier.floor > 0:
            base = replace(base, min_scale=min(tier.floor, base.max_scale))
        policy = ServicePolicy(base, dry_run=False, user_window=None, may_set_window=False)
        view = ServiceView(["revision"], {"revision": {MIN_SCALE: str(current)}})
        p = plan(view, policy, tier.forecast, now_s, raised_at, missing=tier.missing)
        self.current[v][service] = (p.min_scale, p.raised_at_s)
        return p.min_scale

    def in_force_shares(self, v: int) -> dict[str, float]:
        total = sum(self.in_force[v].values())
        return {k: round(c / total, 3) for k, c in sorted(self.in_force[v].items(), key=lambda kv: -kv[1])} if total else {}


def _seconds(retention: str | None) -> int:
    return int(float(retention.rstrip("s"))) if retention else 0


def run_fleet(fleet: FleetTrace, options: FleetOptions = FleetOptions(), progress: bool = True,
              plots: Path | None = None) -> tuple[list[dict], dict]:
    """Every design on one fleet, walk-forward: what each decides (`choose`), the simulator's
    lanes of all of them (`assemble`), one simulation of every lane on the same arrivals
    (`simulate`), and the scores (`report`)."""
    began = time.perf_counter()
    counts = fleet.minute_counts()
    n = counts.shape[1]
    if n < (options.warmup_days + 1) * DAY:
        raise ValueError(f"{fleet.name}: {n} minutes; the walk-forward needs more than {options.warmup_days} warm-up days")
    days = fleet.days
    bar = tqdm(total=(days - options.warmup_days) + 2 * days, desc=fleet.name, disable=not progress, file=sys.stderr)
    choices = choose(fleet, counts, options, bar)
    built = assemble(fleet, counts, choices, options)
    run, simulate_s, day_ends = simulate(fleet, built, options, bar)
    pool = pool_model_scores(fleet, built, run, choices.member, options, bar)
    bar.close()
    scores = report(built, run.totals, pool, options)
    info = fleet_info(fleet, counts, choices, built, day_ends, options, timings={
        "forecast_seconds": choices.seconds, "simulate_seconds": simulate_s, "total_seconds": time.perf_counter() - began})
    if plots is not None:
        write_plots(plots, fleet.name, scores, info["forecast_skill"])
    return scores, info


# -- choice: what each design decides, walk-forward ------------------------------------------------


@dataclass
class Choices:
    """What the designs decide from what was known at each minute: the forecasts, the placement
    (the pool plan's routes) and the pool plan itself."""

    variants: list[PoolPlanSettings]
    """The pool plan's settings: the default's, then the fleet budget's (when given)."""
    per_model: Forecasts
    pool: Forecasts
    member: np.ndarray
    """member[i, m]: model i is served by the pool in minute m."""
    driver: PoolPlanDriver
    """The pool plan minute by minute, every variant in lockstep."""
    longest_fit: float
    seconds: float

    @property
    def ever_dedicated(self) -> np.ndarray:
        """The models that had a Service of their own in some minute."""
        return np.flatnonzero((~self.member).any(axis=1))


def choose(fleet: FleetTrace, counts: np.ndarray, options: FleetOptions, bar: tqdm) -> Choices:
    """The walk-forward forecasts, with the pool plan deciding placement and warmth minute by
    minute from them, as the scale function does."""
    began = time.perf_counter()
    variants = [options.plan_settings()]
    if options.fleet_budget is not None:
        variants.append(replace(variants[0], fleet_budget=options.fleet_budget))
    drivers: list[PoolPlanDriver] = []

    def the_plan(forecasts: Forecasts) -> PoolPlanDriver:
        drivers.append(PoolPlanDriver(counts, forecasts, list(fleet.services), variants, options, fleet.start_minute))
        return drivers[0]

    per_model, pool, member, longest_fit = walk_forward(counts, fleet, options, the_plan, bar)
    return Choices(variants, per_model, pool, member, drivers[0], longest_fit, time.perf_counter() - began)


# -- assembly: every design as lanes of the simulator ----------------------------------------------


@dataclass
class Group:
    """One policy and setting: its lanes (per model, or the pool plus the dedicated models)."""

    policy: str
    settings: dict
    default: bool
    lanes: list[int]
    pool_lane: int | None = None
    dedicated: list[int] = field(default_factory=list)
    """Model of each lane after the pool lane (pooled groups), or of every lane (per-model)."""


class Lanes:
    """The simulator's lanes, group after group: each lane's stream (the arrivals it serves),
    its min-scale each minute and its scale-to-zero-pod-retention-period.

    Streams: each model as it is; the pool's sum (the models placed in it each minute); each
    ever-dedicated model while dedicated; every model summed (one pool, no placement)."""

    def __init__(self, fleet: FleetTrace, member: np.ndarray, ever_dedicated: np.ndarray):
        self.fleet, self.member, self.ever_dedicated = fleet, member, ever_dedicated
        self.n_models = member.shape[0]
        self.n_dedicated = len(ever_dedicated)
        self.pool_stream = self.n_models
        self.dedicated_stream0 = self.n_models + 1
        self.all_stream = self.n_models + 1 + self.n_dedicated
        self.groups: list[Group] = []
        self.stream_of_lane: list[int] = []
        self.rows: list[np.ndarray] = []
        self.keeps: dict[int, np.ndarray] = {}
        """lane -> its retention (s) per minute, where it has one."""

    def streams(self, day: int) -> np.ndarray:
        """Every stream's arrivals, second by second, on `day`."""
        raw = self.fleet.day_arrivals(day)
        m0 = day * DAY
        length = raw.shape[1]
        in_pool = np.repeat(self.member[:, m0:m0 + length // 60], 60, axis=1)
        out = np.empty((self.all_stream + 1, length), np.int32)
        out[:self.n_models] = raw
        out[self.pool_stream] = (raw * in_pool).sum(axis=0)
        d0 = self.dedicated_stream0
        out[d0:d0 + self.n_dedicated] = raw[self.ever_dedicated] * ~in_pool[self.ever_dedicated]
        out[self.all_stream] = raw.sum(axis=0)
        return out

    def per_model(self, policy: str, settings: dict, default: bool, schedule: np.ndarray) -> Group:
        """A lane per model, each on its own arrivals (one Knative Service each)."""
        lanes = list(range(len(self.stream_of_lane), len(self.stream_of_lane) + self.n_models))
        self.stream_of_lane.extend(range(self.n_models))
        self.rows.extend(schedule)
        return self._add(Group(policy, settings, default, lanes, None, list(range(self.n_models))))

    def pooled(self, policy: str, settings: dict, default: bool, pool_row: np.ndarray, dedicated_rows: np.ndarray,
               pool_keep: np.ndarray | None = None, dedicated_keep: np.ndarray | None = None) -> Group:
        """The pool's lane, then a lane per ever-dedicated model (serving it while it is dedicated);
        `pool_keep`, `dedicated_keep`: their retention (s) per minute."""
        first = len(self.stream_of_lane)
        self.stream_of_lane.append(self.pool_stream)
        self.rows.append(pool_row)
        if pool_keep is not None and pool_keep.any():
            self.keeps[first] = pool_keep
        self.stream_of_lane.extend(range(self.dedicated_stream0, self.dedicated_stream0 + self.n_dedicated))
        self.rows.extend(dedicated_rows)
        for j in range(self.n_dedicated if dedicated_keep is not None else 0):
            if dedicated_keep[j].any():
                self.keeps[first + 1 + j] = dedicated_keep[j]
        lanes = list(range(first, first + 1 + self.n_dedicated))
        return self._add(Group(policy, settings, default, lanes, first, list(self.ever_dedicated)))

    def all_pooled(self, policy: str, row: np.ndarray) -> Group:
        """One lane: every model in one pool (no placement)."""
        lane = len(self.stream_of_lane)
        self.stream_of_lane.append(self.all_stream)
        self.rows.append(row)
        return self._add(Group(policy, {}, True, [lane], lane, []))

    def schedule(self) -> np.ndarray:
        return np.array(self.rows, dtype=np.int64)

    def retention(self) -> np.ndarray:
        retention = np.zeros((len(self.rows), len(self.rows[0]) if self.rows else 0), np.int64)
        for lane, keep in self.keeps.items():
            retention[lane] = keep
        return retention

    def _add(self, group: Group) -> Group:
        self.groups.append(group)
        return group


@dataclass
class Assembly:
    """Every design's lanes, and the groups the report names."""

    lanes: Lanes
    all_pooled: Group
    """pool_all_kpa: every model in one pool under Knative alone."""
    default: Group
    """The scale function's pool plan, as deployed."""
    budget: Group | None
    """The same with FLEET_BUDGET (when given)."""
    keepalive: list[Group]
    """pool_keepalive at every POOL_KEEPALIVE_MINUTES: the curve the forecast's share is read against."""


def policy_rows(fc: Forecasts, settings: list[PolicySettings], active: np.ndarray | None = None,
                series: np.ndarray | None = None, fallback: FallbackSettings | None = None) -> list[np.ndarray]:
    """Each series' schedule under each of `settings` (prices), in lockstep; with `series`
    (each one's minute counts) and `fallback`, the scale function's keep-alive fallback."""
    outs = [np.zeros(fc.point.shape[:2], np.int64) for _ in settings]
    n = fc.point.shape[1]
    for i in range(fc.point.shape[0]):
        PolicySchedule(fc.point[i], fc.upper[i], fc.p_any[i], None if series is None else series[i], fallback).fill(
            [out[i] for out in outs], 0, n, settings, None if active is None else active[i])
    return outs


def assemble(fleet: FleetTrace, counts: np.ndarray, choices: Choices, options: FleetOptions) -> Assembly:
    """Every design scored, as lanes: per-model Knative and its baselines, the pooled baselines
    on the chosen placement, and the pool plan (the default, and with the fleet budget)."""
    n_models, n = counts.shape
    member, ever_dedicated = choices.member, choices.ever_dedicated
    lanes = Lanes(fleet, member, ever_dedicated)
    n_ded = lanes.n_dedicated
    peaks = span_peaks(lanes.streams, fleet.days, n, options)
    dedicated_counts = counts[ever_dedicated] * ~member[ever_dedicated]
    pool_counts = (counts * member).sum(axis=0)
    zeros = np.zeros(n, np.int64)
    base = PolicySettings(capacity_rps=options.capacity_rps, cold_start_cost_pod_s=options.cost, max_scale=options.max_scale)

    lanes.per_model("kpa", {}, True, np.zeros((n_models, n), np.int64))
    for k in (1, 2, 5, 10, 20, 60) if options.sweep else (1, 5, 10):
        lanes.per_model("keepalive", {"minutes": k}, k == 10, keepalive_schedule(counts, k))
    lanes.per_model("hybrid_histogram", {"range_min": 240, "head_pct": 5, "tail_pct": 99}, True, hybrid_schedule(counts))
    lanes.per_model("predictive_per_model", {"cold_start_cost_pod_s": options.cost}, True,
                    policy_rows(choices.per_model, [base], series=counts, fallback=FallbackSettings())[0])
    lanes.per_model("predictive_per_model", {"cold_start_cost_pod_s": options.cost, "fallback": "off"}, False,
                    policy_rows(choices.per_model, [base])[0])
    lanes.per_model("oracle_per_model", {}, True, oracle_schedule(peaks[:n_models], options.capacity_rps))

    pm = choices.per_model
    dedicated_fc = Forecasts(pm.point[ever_dedicated], pm.upper[ever_dedicated], pm.p_any[ever_dedicated])
    dedicated_now = ~member[ever_dedicated]
    prices = (options.cost,) + ((60, 120, 600, 1200, 3000) if options.sweep else ())
    price_settings = [replace(base, cold_start_cost_pod_s=float(cost)) for cost in prices]
    pool_rows = policy_rows(choices.pool, price_settings)
    dedicated_rows = policy_rows(dedicated_fc, price_settings, dedicated_now)
    for cost, pool_row, dedicated_row in zip(prices, pool_rows, dedicated_rows):
        lanes.pooled("pool_predictive", {"cold_start_cost_pod_s": cost}, cost == options.cost, pool_row[0], dedicated_row)
    lanes.pooled("pool_kpa", {}, True, zeros, np.zeros((n_ded, n), np.int64))
    keepalive = [lanes.pooled("pool_keepalive", {"minutes": k}, k == 10, keepalive_schedule(pool_counts[None, :], k)[0],
                              keepalive_schedule(dedicated_counts, k) * dedicated_now)
                 for k in POOL_KEEPALIVE_MINUTES]
    d0 = lanes.dedicated_stream0
    lanes.pooled("oracle_pooled", {}, True, oracle_schedule(peaks[lanes.pool_stream], options.capacity_rps),
                 oracle_schedule(peaks[d0:d0 + n_ded], options.capacity_rps))
    all_pooled = lanes.all_pooled("pool_all_kpa", zeros)
    driver = choices.driver
    default = lanes.pooled("predictive", {"cold_start_cost_pod_s": options.cost}, True, driver.pool_min[0],
                           driver.ded_min[0][ever_dedicated], driver.pool_keep[0], driver.ded_keep[0][ever_dedicated])
    budget = None
    if options.fleet_budget is not None:
        budget = lanes.pooled("predictive", {"fleet_budget": options.fleet_budget}, False, driver.pool_min[1],
                              driver.ded_min[1][ever_dedicated], driver.pool_keep[1],
                              driver.ded_keep[1][ever_dedicated])
    return Assembly(lanes, all_pooled, default, budget, keepalive)


DayEnds = dict[int, tuple[np.ndarray, np.ndarray]]
"""day -> every lane's (cold requests, pod-seconds) from the start to that day's start."""


def simulate(fleet: FleetTrace, built: Assembly, options: FleetOptions, bar: tqdm) -> tuple[FleetRun, float, DayEnds]:
    """Every lane over the whole fleet at once, second by second; the totals count the scored
    days only (the warm-up's are taken off). The pool lanes' ready pods are recorded, and the
    running totals at each day's end."""
    lanes = built.lanes
    scored_from = options.warmup_days * DAY_S
    snapshot: dict[str, LaneTotals] = {}
    n_lanes = len(lanes.rows)
    day_ends: DayEnds = {0: (np.zeros(n_lanes, np.int64), np.zeros(n_lanes, np.int64))}

    def on_hour(hour: int, totals: LaneTotals | None) -> None:
        if totals is not None and hour * 3600 == scored_from:
            snapshot["t"] = copy.deepcopy(totals)
        if totals is not None and hour % 24 == 0:
            day_ends[hour // 24] = (totals.cold.copy(), totals.pod_seconds.copy())

    config = FleetSimConfig(capacity_rps=options.capacity_rps, cold_start_s=options.cold_start_s, max_scale=options.max_scale)
    pool_lanes = tuple(g.pool_lane for g in lanes.groups if g.pool_lane is not None)
    began = time.perf_counter()
    run = simulate_lanes(lanes.streams, np.array(lanes.stream_of_lane), lanes.schedule(), config, fleet.seconds, 0,
                         record=pool_lanes, on_hour=on_hour, progress=lambda d: bar.update(1),
                         retention=lanes.retention())
    day_ends.setdefault(fleet.days, (run.totals.cold.copy(), run.totals.pod_seconds.copy()))
    if "t" in snapshot:  # every score counts the scored days only
        for name in ("requests", "cold", "over", "pod_seconds", "wasted_pod_seconds"):
            setattr(run.totals, name, getattr(run.totals, name) - getattr(snapshot["t"], name))
    return run, time.perf_counter() - began, day_ends


# -- reporting: the scores of every design ---------------------------------------------------------


@dataclass
class PoolScores:
    """Each pool lane's per-model figures: its members' cold requests, its model cache."""

    caches: dict[int, PoolModelCache]
    cold: dict[int, np.ndarray]
    """pool lane -> cold requests of each model while the pool served it."""
    requests: np.ndarray
    """Each model's scored requests."""


def pool_model_scores(fleet: FleetTrace, built: Assembly, run: FleetRun, member: np.ndarray, options: FleetOptions,
                      bar: tqdm) -> PoolScores:
    """The pool's per-model scores from the recorded ready pods: cold requests of each member,
    model loads and evictions (PoolModelCache, minute by minute)."""
    n_models = member.shape[0]
    scored_from = options.warmup_days * DAY_S
    pool_groups = [g for g in built.lanes.groups if g.pool_lane is not None]
    out = PoolScores({g.pool_lane: PoolModelCache(options.models_per_pod) for g in pool_groups if g.pool_lane is not None},
                     {g.pool_lane: np.zeros(n_models, np.int64) for g in pool_groups if g.pool_lane is not None},
                     np.zeros(n_models, np.int64))
    for day in range(fleet.days):
        raw = fleet.day_arrivals(day)
        length = raw.shape[1] - raw.shape[1] % 60
        base_s, m0 = day * DAY_S, day * DAY
        scored = np.arange(base_s, base_s + raw.shape[1]) >= scored_from
        out.requests += raw[:, scored].sum(axis=1)
        for g in pool_groups:
            lane = g.pool_lane
            assert lane is not None
            in_pool = np.ones((n_models, raw.shape[1]), bool) if g is built.all_pooled else \
                np.repeat(member[:, m0:m0 + raw.shape[1] // 60], 60, axis=1)
            ready = run.ready[lane][base_s:base_s + raw.shape[1]]
            pooled = raw * in_pool
            out.cold[lane] += (pooled[:, (ready == 0) & scored]).sum(axis=1)
            per_minute = pooled[:, :length].reshape(n_models, -1, 60).sum(axis=2)
            r = ready[:length].reshape(-1, 60)
            fewest, most = r.min(axis=1), r.max(axis=1)
            cache = out.caches[lane]
            for j in range(per_minute.shape[1]):
                active = np.flatnonzero(per_minute[:, j])
                cache.minute(int(fewest[j]), int(most[j]), {int(i): int(per_minute[i, j]) for i in active},
                             scored=(m0 + j) * 60 >= scored_from)
        bar.update(1)
    return out


def report(built: Assembly, t: LaneTotals, pool: PoolScores, options: FleetOptions) -> list[dict]:
    """One row per group: requests, cold starts (and the 75th percentile service's share), model
    loads, over-capacity requests, pod-seconds; and each as a ratio to per-model Knative's."""
    n_models = len(pool.requests)
    scores = []
    for g in built.lanes.groups:
        lanes = np.array(g.lanes)
        cold_of = np.zeros(n_models, np.int64)
        if g.pool_lane is None:
            cold_of[np.array(g.dedicated)] = t.cold[lanes]
        else:
            cold_of += pool.cold[g.pool_lane]
            if g.dedicated:
                np.add.at(cold_of, np.array(g.dedicated), t.cold[lanes[1:]])
        has = pool.requests > 0
        pct = 100.0 * cold_of[has] / pool.requests[has]
        cache = pool.caches.get(g.pool_lane) if g.pool_lane is not None else None
        loads = cache.scores.model_loads if cache else 0
        total_requests = int(t.requests[lanes].sum())
        scores.append({
            "policy": g.policy, "settings": g.settings, "default": g.default,
            "requests": total_requests,
            "cold_start_requests": int(t.cold[lanes].sum()),
            "cold_start_pct": 100.0 * t.cold[lanes].sum() / max(1, total_requests),
            "model_loads": loads,
            "model_evictions": cache.scores.evictions if cache else 0,
            # A request waits model_load_ms when it brings its model into a pod, else nothing.
            "model_load_wait_p99_ms": options.model_load_ms if loads > 0.01 * max(1, total_requests) else 0.0,
            "pod_seconds": int(t.pod_seconds[lanes].sum()),
            "wasted_pod_seconds": int(t.wasted_pod_seconds[lanes].sum()),
            "p75_service_cold_pct": float(np.percentile(pct, 75)) if len(pct) else 0.0,
            "over_capacity_requests": int(t.over[lanes].sum()),
            "services_dedicated": built.lanes.n_dedicated if g.pool_lane is not None and g is not built.all_pooled else 0,
        })
    kpa = scores[0]
    for s in scores:
        for key, ref in (("cold_start_vs_kpa", "cold_start_requests"), ("pod_seconds_vs_kpa", "pod_seconds"),
                         ("over_capacity_vs_kpa", "over_capacity_requests")):
            s[key] = s[ref] / kpa[ref] if kpa[ref] else float("nan")
    return scores


def fleet_info(fleet: FleetTrace, counts: np.ndarray, choices: Choices, built: Assembly, day_ends: DayEnds,
               options: FleetOptions, timings: dict[str, float]) -> dict:
    """What the run was (fleet, settings, placement) and what it found besides the scores: the
    pool plan's choices, the forecaster's skill, where the time went."""
    n_models, n = counts.shape
    warmup = options.warmup_days * DAY
    ever_dedicated, member, driver = choices.ever_dedicated, choices.member, choices.driver
    dedicated_counts = counts[ever_dedicated] * ~member[ever_dedicated]
    forecast_skill = skill.fleet_skill(counts, choices.per_model.point[:, :, 0], choices.per_model.p_any[:, :, 0], warmup)
    return {
        "fleet": fleet.name, "services": n_models, "minutes": n, "warmup_minutes": warmup,
        "cold_start_s": options.cold_start_s, "capacity_rps": options.capacity_rps, "max_scale": options.max_scale,
        "models_per_pod": options.models_per_pod, "model_load_ms": options.model_load_ms,
        "dedicated_services": [fleet.services[i] for i in ever_dedicated], "placement_moves": driver.moves,
        "dedicated_share_of_requests": float(dedicated_counts[:, warmup:].sum() / max(1, counts[:, warmup:].sum())),
        "lanes": len(built.lanes.stream_of_lane), "forecast_seconds": round(timings["forecast_seconds"], 1),
        "longest_fit_seconds": round(choices.longest_fit, 1), "simulate_seconds": round(timings["simulate_seconds"], 1),
        "total_seconds": round(timings["total_seconds"], 1),
        "candidates": describe_candidates(choices.variants[0], len(choices.variants) > 1),
        "default_choices": driver.in_force_shares(0),
        "forecast_share": forecast_share(driver, 0, built.default, built.keepalive, day_ends, options.warmup_days),
        "budget_forecast_share": (forecast_share(driver, 1, built.budget, built.keepalive, day_ends, options.warmup_days)
                                  if built.budget is not None else None),
        "budget_choices": driver.in_force_shares(1) if built.budget is not None else {},
        "plan_seconds": round(driver.seconds, 1), "forecast_skill": forecast_skill,
    }


def write_plots(plots: Path, name: str, scores: list[dict], forecast_skill: dict) -> None:
    from training.plots import fleet_pareto_plot, reliability_plot

    plots.mkdir(parents=True, exist_ok=True)
    stem = name.split(".")[0]
    fleet_pareto_plot(plots / f"{stem}_pareto.png", name, scores)
    reliability_plot(plots / f"{stem}_reliability.png", name, {"forecaster, every model": forecast_skill["reliability"]})


def describe_candidates(settings: PoolPlanSettings, budget: bool = False) -> str:
    prices = "/".join(f"{p:g}" for p in sorted(set(settings.prices) | {settings.cost}))
    keeps = "/".join(str(k) for k in settings.keepalive_minutes)
    combined = "/".join(str(k) for k in settings.forecast_keepalive_minutes)
    return (f"forecast at cost {prices}; the same + Knative retention {combined} min; keep-alive {keeps} min "
            f"(<= 60: Knative's retention, longer: a held floor)"
            + ("; hybrid histogram of the pool's idle gaps" if settings.hybrid else "")
            + ("; time-of-day slots at each price" if settings.timeofday else "")
            + (f"; with the fleet budget, keep-alives of every minute 1-{RETENTION_MAX_MINUTES} and "
               + "/".join(str(k) for k in BUDGET_KEEPALIVE_MINUTES if k > RETENTION_MAX_MINUTES) + " min" if budget else ""))


def forecast_share(driver: PoolPlanDriver, v: int, group: "Group", keepalives: list["Group"],
                   day_ends: dict[int, tuple[np.ndarray, np.ndarray]], warmup_days: int) -> dict:
    """The forecast's share of the plan's warmth: on the scored days where a forecast candidate
    was in force on the pool (most of the day's minutes), the plan's cold starts and pod-seconds
    against the pooled keep-alive curve (the same placement, min-scale 1 for k idle minutes)
    on the same days, interpolated at the plan's pod-seconds."""
    days = [d for d in sorted(day_ends) if d >= warmup_days and d + 1 in day_ends]
    picked = []
    for d in days:
        labels = driver.warmth[v][d * DAY:(d + 1) * DAY]
        if labels and sum(1 for w in labels if w.startswith("forecast")) * 2 > len(labels):
            picked.append(d)
    out = {"days": len(days), "forecast_days": len(picked)}
    if not picked:
        return out

    def on(g: "Group") -> tuple[float, float]:
        lanes = np.array(g.lanes)
        cold = sum(float(day_ends[d + 1][0][lanes].sum() - day_ends[d][0][lanes].sum()) for d in picked)
        pod_s = sum(float(day_ends[d + 1][1][lanes].sum() - day_ends[d][1][lanes].sum()) for d in picked)
        return cold, pod_s

    cold, pod_s = on(group)
    curve = sorted(on(g)[::-1] for g in keepalives)  # (pod-s, cold), cheapest first
    xs, ys = [c[0] for c in curve], [c[1] for c in curve]
    at = float(np.interp(pod_s, xs, ys)) if xs[0] <= pod_s <= xs[-1] else None
    out.update(cold=cold, pod_seconds=pod_s, keepalive_cold_at_equal_pod_s=at,
               beyond_curve="cheaper than every keep-alive" if pod_s < xs[0] else
               "dearer than every keep-alive" if pod_s > xs[-1] else None)
    return out


def span_peaks(streams, days: int, n: int, options: FleetOptions) -> np.ndarray:
    """For every stream and minute m, the busiest second from the moment a decision at m applies
    until the next decision's pods can be ready (controllers.OracleMinute's span)."""
    delay = FleetSimConfig().actuation_delay_s
    lag = delay + int(math.ceil(options.cold_start_s))
    first = second = None
    for day in range(days):
        s = streams(day)
        usable = s.shape[1] - s.shape[1] % 60
        per_min = s[:, :usable].reshape(s.shape[0], -1, 60)
        if first is None:
            first = np.zeros((s.shape[0], n), np.int64)
            second = np.zeros((s.shape[0], n + 1), np.int64)
        m0 = day * DAY
        first[:, m0:m0 + per_min.shape[1]] = per_min[:, :, delay:].max(axis=2)
        second[:, m0:m0 + per_min.shape[1]] = per_min[:, :, :lag].max(axis=2)
    return np.maximum(first, second[:, 1:n + 1])


def print_fleet_table(scores: list[dict], info: dict) -> None:
    print(f"\n## {info['fleet']}: {info['services']} services, {info['minutes']} min, warm-up {info['warmup_minutes']} min not scored, "
          f"refit daily; cold start {info['cold_start_s']} s, {info['capacity_rps']} req/s per pod, max-scale {info['max_scale']}, "
          f"{info['models_per_pod']} models per pool pod, model load {info['model_load_ms']:.0f} ms")
    head, tail = findings_lines(info)
    print("\n".join(head) + "\n")
    print("| policy | settings | requests | cold | cold % | cold vs KPA | p75 service cold % | model loads | evictions | "
          "over capacity | over cap vs KPA | pod-s | pod-s vs KPA | wasted pod-s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for s in scores:
        settings = ", ".join(f"{k}={v}" for k, v in s["settings"].items()) + (" (default)" if s["default"] and s["policy"] == "predictive" else "")
        print(f"| {s['policy']} | {settings} | {s['requests']} | {s['cold_start_requests']} | {s['cold_start_pct']:.2f} | "
              f"{s['cold_start_vs_kpa']:.3f} | {s['p75_service_cold_pct']:.1f} | {s['model_loads']} | {s['model_evictions']} | "
              f"{s['over_capacity_requests']} | {s['over_capacity_vs_kpa']:.3f} | {s['pod_seconds']} | {s['pod_seconds_vs_kpa']:.3f} | "
              f"{s['wasted_pod_seconds']} |")
    print("\n" + "\n".join(tail))


def findings_lines(info: dict) -> tuple[list[str], list[str]]:
    """What a run found besides its scores, as lines: (placement, timings and the forecast's
    skill; the warmth candidates, what was in force and the forecast's share). Printed with the
    table, and rendered into docs/results from the `--info` file (scripts/gen_results_tables.py),
    so that the skill a page quotes is the run's, never a sentence typed after another run."""
    head = [f"placement: {len(info['dedicated_services'])} services ever dedicated ({info['dedicated_share_of_requests']:.1%} of "
            f"scored requests), {info['placement_moves']} moves; forecasts {info['forecast_seconds']} s (longest fit "
            f"{info['longest_fit_seconds']} s), simulation {info['simulate_seconds']} s over {info['lanes']} lanes, total "
            f"{info['total_seconds']} s",
            skill.format_fleet_skill(info["forecast_skill"])]
    tail = [f"the default's warmth candidates (scale.pool_plan.candidates, chosen daily per tier): {info['candidates']}",
            f"the default is the scale function's pool plan (scale.pool_plan.plan_pool, {info['plan_seconds']} s minute by "
            f"minute): the pool's warmth chosen once a day from the minute history the function keeps; share of scored "
            f"minutes each candidate was in force: {info['default_choices']}"]
    if info["budget_choices"]:
        tail.append(f"fleet budget: candidates in force {info['budget_choices']}")
    for name, share in (("default", info["forecast_share"]), ("fleet budget", info["budget_forecast_share"])):
        if share is None:
            continue
        line = f"the forecast's share ({name}): a forecast candidate in force on {share['forecast_days']} of {share['days']} scored days"
        if share["forecast_days"]:
            at = share["keepalive_cold_at_equal_pod_s"]
            line += (f"; on those days the plan had {share['cold']:.0f} cold starts at {share['pod_seconds']:.0f} pod-s, "
                     + (f"the pooled keep-alive curve {at:.0f} at equal pod-s ({'beats it' if share['cold'] < at else 'does not beat it'}"
                        + (f", {share['cold'] / at:.2f}x)" if at else ")") if at is not None
                        else f"the pooled keep-alive curve cannot be compared ({share['beyond_curve']})"))
        tail.append(line)
    tail.append("rows a cluster runs: `predictive` (the default, and with FLEET_BUDGET), `pool_all_kpa` and `kpa` (Knative "
                "alone, no plan), `keepalive` (per-model retention); every other row is a baseline no deployment runs")
    return head, tail


POOL_MANIFEST = Path(__file__).resolve().parent.parent / "serving" / "pool" / "infer-pool.yaml"


def _pool_service(manifest: Path) -> dict:
    """The pool's Knative Service as the manifest declares it (what the scale function reads)."""
    import yaml

    return next(d for d in yaml.safe_load_all(manifest.read_text()) if d and d.get("kind") == "Service")


def pool_capacity_models(manifest: Path = POOL_MANIFEST) -> int:
    """The pool's capacity in models, read from the pool manifest by the scale function's own
    rule (pool_placement.capacity_models: its POOL_MEMORY_MB over its model-memory-mb): the one
    number infer (POOL_MEMORY_MB), scale and this backtest share."""
    from scale.pool_placement import capacity_models

    return capacity_models(_pool_service(manifest), PoolSettings())


def pool_model_load_ms(manifest: Path = POOL_MANIFEST) -> float:
    """A model's load time in a pool pod, read from the pool manifest by the scale function's own
    rule (pool_placement.model_load_ms: its `predictive-scaling.io/model-load-ms`, else
    POOL_MODEL_LOAD_MS's default): the placement rule's load time and the backtest's are one."""
    from scale.pool_placement import model_load_ms

    return model_load_ms(_pool_service(manifest), PoolSettings())


def main_fleets(args, fleets: list[FleetTrace] | None = None, emit_json: bool = True) -> list[dict]:
    """The fleet half of `python -m training.backtest` (its parser holds the options): the
    fleet files named, or `fleets` already read (the what-if on Prometheus). Returns the JSON
    rows (printed too unless `emit_json` is False)."""
    import json

    from training.fleet_trace import load_fleet

    options = FleetOptions(cold_start_s=int(math.ceil(args.cold_start_s)), capacity_rps=args.capacity_rps,
                           max_scale=args.max_scale,
                           models_per_pod=args.models_per_pod if args.models_per_pod is not None else pool_capacity_models(),
                           model_load_ms=args.model_load_ms if args.model_load_ms is not None else pool_model_load_ms(),
                           fleet_budget=args.fleet_budget, sweep=args.sweep, seed=args.seed, warmup_days=args.warmup_days,
                           placement=PlacementSettings(capacity_rps=args.capacity_rps))
    everything, infos = [], []
    for fleet in fleets if fleets is not None else (load_fleet(path, seed=args.seed) for path in args.fleet):
        scores, info = run_fleet(fleet, options, progress=True, plots=args.plots)
        infos.append(info)
        if getattr(args, "info", None) is not None:
            # rewritten after each fleet: a long run's first fleets are kept if a later one fails
            args.info.write_text(json.dumps(infos, indent=1, default=float) + "\n")
        if args.format == "json":
            everything += [{**s, "fleet": info["fleet"]} for s in scores]
            # what the run found besides the scores (placement, the warmth chosen, timings)
            print(json.dumps({"info": info}, default=float), file=sys.stderr, flush=True)
        else:
            print_fleet_table(scores, info)
            sys.stdout.flush()
    if args.format == "json" and emit_json:
        json.dump(everything, sys.stdout, indent=1, default=float)
        print()
    return everything
