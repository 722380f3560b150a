"""The model pool, actuated: where each model of a namespace lives, the pool's and the dedicated
Services' forecasts and floors, pre-loads and moves. The policy is placement.py (pure, the code
the fleet backtest scores); this module reads the cluster, asks it, and writes what it says.

A namespace has a pool when one opted-in Knative Service carries `predictive-scaling.io/pool:
"true"`. Each model of it is one DomainMapping (`<model>.<namespace>.<domain>`), labelled
`predictive-scaling.io/model: <model>` (the name the forecast event uses for the model's
series, and the name the pool serves it by) and annotated `predictive-scaling.io/dedicated-service:
<Service>` (its own Service). The mapping's `spec.ref.name` says where the model is routed now:
the pool or that Service. Why a DomainMapping and not an Istio VirtualService: it is Knative's
own resource for a host of one's choosing, so a move is one merge patch of `spec.ref.name`, and
its status says when the move is programmed in the gateways (`observedGeneration` = generation
and Ready; net-istio probes them), which a VirtualService does not report. The host the pod sees
stays the model's: the mapping's ingress rewrites the host to the target's and sets
K-Original-Host, which the target's queue-proxy puts back into `Host:` (knative/serving
pkg/reconciler/domainmapping/resources/ingress.go, pkg/queue/handler.go), so the pool reads the
model from the first DNS label of `Host:` for MLflow `/invocations`.

Per event and namespace this module reads the cluster into a `pool_plan.PoolView` (routes,
readiness, the pool's capacity), loads the remembered state and, when a warmth choice is due,
the bounded minute history (pool_history.py), calls `pool_plan.plan_pool` (pure: the code the
fleet backtest runs minute by minute) and carries out what it says:
1. pre-loads (V2 repository load through the pool's URL) of the models it names, only while the
   pool has a ready pod (else the pool's own min-scale raise and warm-up start it);
2. moves (placement.route_step's MOVE): a move into the pool waits until the model is loaded;
   a move out of a tier that cannot serve (its Service gone, or not Ready beyond
   POOL_NOT_READY_SECONDS) waits for neither the pool's pod nor the load (its route reaches
   nothing: a cold pool at least buffers and serves), and is counted
   (`scale_placement_fallbacks_total`) and logged;
3. each tier's warmth: the forecast, price and floor the scaler then decides min-scale from
   (decision.plan), and Knative's keep-alive, `scale-to-zero-pod-retention-period`, merge-patched
   in place on the tier's routed Revisions (their PodAutoscalers on <= 1.20, as min-scale is),
   and restored to the template's own value when the plan drops it;
4. a dedicated Service carries ROUTED_FINALIZER while a model's route reaches it: deleted while
   routed to, it keeps serving (Knative leaves a Service being deleted, its Route and Revisions
   as they are: knative.dev/pkg's generated reconciler runs no ReconcileKind once
   deletionTimestamp is set, and Service's reconciler is no Finalizer), the model is loaded in
   the pool and its route moved back (a counted fallback), and only when that route is
   programmed is the finalizer released: no request meets a route to nothing;
5. mappings not programmed beyond the bound are reported (`scale_placement_mappings_not_ready`,
   a warning log line, the decision event's record) and no longer hold the pool warm.
Dry run (DRY_RUN or the pool's annotation): the same decisions and reports, no pre-load and no
patch but the release of a deletion hold (nothing is held in dry run); the placement state is
still kept, so that the hysteresis is the one a real run has.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field

import redis

from fncommon import json_log

from . import placement as policy
from . import metrics
from . import pool_plan as plan
from .annotations import BadAnnotation, ServicePolicy, service_policy
from .events import ServiceForecast
from .knative_api import ApiSkip, ApiTransient, KnativeApi
from .min_scale_policy import LEAD_MINUTES, MinuteForecast, PolicySettings, p_any_in
from .placement import DEDICATED, POOL, PlacementSettings
from .placement_store import PlacementState, PlacementStore
from .pool_client import PoolClient, PoolError
from .pool_history import PoolHistoryStore
from .pool_settings import PoolSettings

log = logging.getLogger("scale.placement")

POOL_LABEL = "predictive-scaling.io/pool"
MODEL_LABEL = "predictive-scaling.io/model"
DEDICATED_ANNOTATION = "predictive-scaling.io/dedicated-service"
MIN_SCALE = "autoscaling.knative.dev/min-scale"
ROUTED_FINALIZER = "predictive-scaling.io/routed"
"""On each dedicated Service a model's route reaches: its deletion waits until none does."""
IDLE = [MinuteForecast(0.0, 0.0, 0.0)] * 5


@dataclass
class NamespacePlacement:
    """What placement hands the scaler for one namespace."""

    entries: dict[str, ServiceForecast] = field(default_factory=dict)
    """Service name -> the forecast to decide its min-scale from (the pool's sum, a dedicated
    Service's model, or idle)."""
    floors: dict[str, int] = field(default_factory=dict)
    """Service name -> min-scale it must not go below this tick (a move's target, a route's source)."""
    consumed: set[str] = field(default_factory=set)
    """Forecast entries that name models (not Services): handled here, not skipped as unknown."""
    records: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    transient: list[str] = field(default_factory=list)
    states: dict[str, PlacementState] = field(default_factory=dict)
    prices: dict[str, float] = field(default_factory=dict)
    """Service name -> the price its min-scale is decided at this tick (the tier's warmth)."""

    def policy_for(self, name: str, service: ServicePolicy) -> ServicePolicy:
        """The Service's policy with this tick's floor (never above its max-scale) and price."""
        settings = service.settings
        price = self.prices.get(name)
        if price is not None and price != settings.cold_start_cost_pod_s:
            settings = dataclasses.replace(settings, cold_start_cost_pod_s=price)
        floor = self.floors.get(name)
        if floor is not None and floor > settings.min_scale:
            settings = dataclasses.replace(settings, min_scale=min(floor, settings.max_scale))
        return service if settings is service.settings else dataclasses.replace(service, settings=settings)


@dataclass(frozen=True)
class Armed:
    """A namespace as the last event placed it: what route_guard.py acts with between events."""

    pool: str
    pool_url: str
    legacy: bool
    opt_in_label: tuple[str, str]


class PoolPlacement:
    def __init__(self, settings: PoolSettings, api: KnativeApi, client: redis.Redis, state_ttl_s: int,
                 opt_in_label: tuple[str, str]):
        self.armed: dict[str, Armed] = {}
        """Namespaces whose pool the last event placed for real (not dry run): route_guard.py's."""
        self.settings = settings
        self.api = api
        self.store = PlacementStore(client, state_ttl_s)
        self.history = PoolHistoryStore(client, settings.history_minutes, state_ttl_s)
        self.pool = PoolClient(settings.preload_timeout_s, settings.gateway, settings.control_url)
        self.opt_in_label = opt_in_label

    def close(self) -> None:
        self.pool.close()

    def save(self, states: dict[str, PlacementState], trust_until_s: float) -> None:
        self.store.save(states, trust_until_s)

    def run(self, namespace: str, ksvcs: dict[str, dict], targets: dict[str, dict], entries: dict[str, ServiceForecast],
            now_s: float, fresh: bool, trust_until_s: float, defaults, dry_run_default: bool,
            legacy: bool = False) -> NamespacePlacement | None:
        """None when the namespace has no pool (no API call is made for it then, but the release
        of a deletion hold left from when it had one: nothing moves routes there any more)."""
        pools = sorted(n for n, s in ksvcs.items() if (s["metadata"].get("labels") or {}).get(POOL_LABEL) == "true")
        self.armed.pop(namespace, None)
        if not pools:
            self._release_all(namespace, ksvcs)
            return None
        out = NamespacePlacement()
        if len(pools) > 1:
            self._release_all(namespace, ksvcs)
            out.skipped += [{"service": f"{namespace}/{p}", "reason": f"more than one pool in the namespace ({', '.join(pools)}): "
                                                                         "placement off, untouched"} for p in pools]
            out.floors.update({p: _current(ksvcs[p], targets) for p in pools})
            return out
        pool_name = pools[0]
        pool = ksvcs[pool_name]
        try:
            pool_policy = service_policy(pool, defaults, dry_run_default)
        except BadAnnotation as exc:
            return self._hold_pool(out, namespace, pool_name, pool, targets, f"bad annotation on the pool: {exc}")
        try:
            mappings = [m for m in self.api.list_mappings(namespace) if (m["metadata"].get("labels") or {}).get(MODEL_LABEL)]
        except ApiSkip as exc:
            return self._hold_pool(out, namespace, pool_name, pool, targets, f"cannot list DomainMappings: {exc}")
        except ApiTransient as exc:
            out.transient.append(str(exc))
            return self._hold_pool(out, namespace, pool_name, pool, targets, f"API unavailable, will retry: {exc}")
        dry_run = pool_policy.dry_run
        settings = plan_settings(self.settings, pool_policy.settings)
        pool_url = (pool.get("status") or {}).get("url") or ""
        pool_warm = _ready_pods(pool, targets) > 0
        if not dry_run:
            self.armed[namespace] = Armed(pool_name, pool_url, legacy, self.opt_in_label)

        # -- the view: each model's route and its tiers' readiness -----------------------------
        views: list[plan.ModelView] = []
        mapping_of: dict[str, dict] = {}
        records: dict[str, dict] = {}
        for mapping in sorted(mappings, key=lambda m: m["metadata"]["name"]):
            model = mapping["metadata"]["labels"][MODEL_LABEL]
            out.consumed.add(model)
            ref = ((mapping.get("spec") or {}).get("ref") or {}).get("name")
            dedicated = (mapping["metadata"].get("annotations") or {}).get(DEDICATED_ANNOTATION)
            routed = POOL if ref == pool_name else DEDICATED if ref and ref == dedicated else None
            record = {"model": f"{namespace}/{model}", "host": mapping["metadata"]["name"], "routed_to": ref,
                      "tier": routed, "decided": None, "rate_rps": None, "leaning_since": None, "action": None,
                      "move": None, "preload": None}
            if routed is None:
                record["reason"] = f"routed to {ref!r}, neither the pool nor its dedicated Service: untouched"
                out.records.append(record)
                continue
            ksvc = ksvcs.get(dedicated) if dedicated else None
            draining = ksvc is not None and _terminating(ksvc)
            views.append(plan.ModelView(model, routed, dedicated, ksvc is not None and not draining,
                                        _dedicated_ready(ksvc, targets) and not draining, _failing(ksvc),
                                        _settled(mapping), draining=draining))
            mapping_of[model] = mapping
            records[model] = record

        # -- the remembered state, out-of-order ticks ------------------------------------------
        stored = self.store.load([_uid(mapping_of[v.name]) for v in views])
        states: dict[str, plan.ModelState | None] = {}
        held: set[str] = set()
        for v in views:
            state = stored.get(_uid(mapping_of[v.name]))
            if state is not None and now_s < state.tick_s <= trust_until_s:
                held.add(v.name)
                records[v.name].update(decided=state.tier, action="hold",
                                       reason="out of order: a newer forecast was already applied")
            states[v.name] = state
        forecasts = {v.name: (entries[v.name].minutes if v.name in entries else None) for v in views}
        observed = {v.name: seen for v in views if v.name in entries and (seen := entries[v.name].observed)}
        # the history is what was observed and forecast (kept in dry run too), recorded before it is read
        self.history.record(namespace, int(now_s // 60),
                            {n: (p_any_in(f[:LEAD_MINUTES]) if f else None) for n, f in forecasts.items()}, observed,
                            {n: plan.covered_size(f) for n, f in forecasts.items()})
        tier_states = self.history.load_tiers(namespace, [pool_name])
        history: dict[str, plan.TierHistory] = {}
        if plan.choice_due(tier_states.get(pool_name), now_s, settings):
            members = [v.name for v in views if v.routed == POOL]
            counts, p_any, sizes = self.history.load_models(namespace, members)
            history[pool_name] = plan.tier_history(int(now_s // 60), settings.history_minutes, counts, p_any, members,
                                                   sizes, settings.sizing.capacity_rps)
        tier_states = {k: plan.note_observed(s, observed, [v.name for v in views if v.routed == POOL])
                       for k, s in tier_states.items()}
        view = plan.PoolView(pool_name, [v for v in views if v.name not in held], pool_warm,
                             frozenset(), _current(pool, targets),
                             {v.dedicated: _current(ksvcs[v.dedicated], targets) for v in views
                              if v.dedicated and v.dedicated in ksvcs},
                             capacity_models(pool, self.settings), model_load_ms(pool, self.settings) / 1000.0)
        decided = plan.plan_pool(view, forecasts, states, tier_states, history, settings, now_s, fresh)
        self.history.save_tiers(namespace, decided.tier_states)

        # -- pre-loads --------------------------------------------------------------------------
        wanted = [p for p in decided.models.values() if p.preload]
        loaded: set[str] = set()
        if pool_warm and wanted:
            try:
                loaded = self.pool.loaded(pool_url)
            except PoolError as exc:
                json_log.event(log, "pool index failed", logging.WARNING, namespace=namespace, reason=str(exc))
                for p in wanted:
                    records[p.name]["preload"] = {"outcome": "failed", "reason": f"repository index: {exc}"}
                wanted = []
        for p in wanted:
            if p.name in loaded:
                records[p.name]["preload"] = {"outcome": "loaded already"}
                continue
            if not pool_warm:
                outcome = {"outcome": "deferred", "reason": "the pool has no ready pod yet: its min-scale is raised first"}
            elif dry_run:
                outcome = {"outcome": "dry_run", "reason": "would load"}
            else:
                try:
                    self.pool.load(pool_url, p.name)
                    loaded.add(p.name)
                    outcome = {"outcome": "loaded"}
                except PoolError as exc:
                    outcome = {"outcome": "failed", "reason": str(exc)}
            records[p.name]["preload"] = outcome
            metrics.PRELOADS.labels(namespace, outcome["outcome"]).inc()
            json_log.event(log, "pre-load", namespace=namespace, model=p.name, **outcome)

        # -- moves, only onto a ready target ------------------------------------------------------
        by_name = {v.name: v for v in views}
        routed_now = {v.name: v.routed for v in views}
        for p in decided.models.values():
            v, record, mapping = by_name[p.name], records[p.name], mapping_of[p.name]
            record.update(decided=p.decided, rate_rps=p.rate_rps, leaning_since=p.leaning_since)
            if p.reason:
                record["reason"] = p.reason
            action = p.action
            if action == policy.MOVE and p.decided == POOL and p.name not in loaded and (not p.fallback or v.draining):
                action = policy.PREPARE  # the pool has a pod, but not the model yet (a route to
                # nothing moves at once: the pool loads the model on its first request; a Service
                # being deleted still serves, held by its finalizer, so its move waits for the load)
            record["action"] = action
            target = v.dedicated if p.decided == DEDICATED else pool_name
            if p.not_ready:
                record["not_ready"] = True
                json_log.event(log, "mapping not ready beyond the bound", logging.WARNING, namespace=namespace,
                               model=p.name, host=mapping["metadata"]["name"], reason=p.reason)
            if action == policy.PREPARE:
                record["move"] = {"from": p.routed, "to": p.decided, "applied": False,
                                  "reason": f"waiting for {target} to be ready"
                                            + ("" if p.decided == DEDICATED else f" with {p.name} loaded")}
                metrics.MOVES.labels(namespace, p.decided, "waiting").inc()
            elif action == policy.MOVE:
                move = {"from": p.routed, "to": p.decided, "applied": False, "target": target}
                if p.fallback:
                    move["fallback"] = True
                if dry_run:
                    move["reason"] = "dry run: would re-point the route"
                    metrics.MOVES.labels(namespace, p.decided, "dry_run").inc()
                else:
                    source = pool_name if p.routed == POOL else v.dedicated
                    try:
                        if source is None or target is None:  # the plan moves only models whose mapping names one
                            raise ApiSkip(0, "no dedicated Service named on the mapping")
                        self.api.repoint_mapping(namespace, mapping["metadata"]["name"], source, target,
                                                 mapping["metadata"].get("resourceVersion"))
                        move["applied"] = True
                        routed_now[p.name] = p.decided
                        metrics.MOVES.labels(namespace, p.decided, "applied").inc()
                        if p.fallback:
                            metrics.FALLBACKS.labels(namespace).inc()
                    except ApiSkip as exc:
                        move["reason"] = f"API refused, route unchanged: {exc}"
                        metrics.MOVES.labels(namespace, p.decided, "failed").inc()
                    except ApiTransient as exc:
                        move["reason"] = f"API unavailable, route unchanged, will retry: {exc}"
                        out.transient.append(str(exc))
                        metrics.MOVES.labels(namespace, p.decided, "failed").inc()
                record["move"] = move
                json_log.event(log, "move", logging.WARNING if p.fallback else logging.INFO, namespace=namespace,
                               model=p.name, **move, **({"reason": p.reason} if p.fallback else {}))
            if p.state is not None:
                out.states[_uid(mapping)] = p.state
        self._hold_deletions(namespace, pool_name, ksvcs, views, mapping_of, routed_now, records, out, hold=not dry_run)
        for tier in (POOL, DEDICATED):
            metrics.MODELS.labels(namespace, tier).set(sum(1 for r in routed_now.values() if r == tier))
        metrics.NOT_READY.labels(namespace).set(len(decided.not_ready))

        # -- each tier's warmth: what the scaler decides min-scale from, and the keep-alive ------
        for name, warm in decided.tiers.items():
            out.entries[name] = ServiceForecast(namespace, name, warm.forecast, warm.missing or "ok")
            out.floors[name] = warm.floor
            out.prices[name] = warm.price
            retention = self._keep_alive(namespace, ksvcs[name], targets, warm.retention, dry_run, legacy, out)
            if name == pool_name:
                out.records.append({"pool": f"{namespace}/{pool_name}", "models": decided.members,
                                    "without_forecast": decided.without_forecast, "floor": warm.floor, "warm": pool_warm,
                                    "dry_run": dry_run, "warmth": warm.warmth, "price": warm.price,
                                    "retention": retention, "reason": warm.reason,
                                    "not_ready": decided.not_ready, "capacity_models": view.capacity_models})
        out.records[:0] = [records[v.name] for v in views]
        return out

    def _hold_deletions(self, namespace: str, pool_name: str, ksvcs: dict[str, dict], views: list[plan.ModelView],
                        mapping_of: dict[str, dict], routed_now: dict[str, str], records: dict[str, dict],
                        out: NamespacePlacement, hold: bool = True) -> None:
        """Keep ROUTED_FINALIZER on each dedicated Service a model's route reaches, so that a
        Service deleted while routed to keeps serving (Knative does not reconcile a Service
        being deleted: its Route and Revisions stay until it is gone) until its models' routes
        are back in the pool and programmed; then release it and the deletion completes. In dry
        run (`hold` False) nothing moves a route, so nothing is held: the function's finalizer is
        only removed where it is (the one write a dry run makes, so that no deletion waits on a
        function that will not act)."""
        reaching: dict[str, list[str]] = {}
        """Dedicated Service -> the models whose route reaches it, or may still (in flight)."""
        for v in views:
            if not v.dedicated:
                continue
            reaching.setdefault(v.dedicated, [])
            moved = bool((records[v.name].get("move") or {}).get("applied"))
            in_flight = moved or (not _settled(mapping_of[v.name]) and not records[v.name].get("not_ready"))
            if routed_now.get(v.name) == DEDICATED or in_flight:
                reaching[v.dedicated].append(v.name)
        for name, ksvc in sorted(ksvcs.items()):
            if name == pool_name:
                continue
            meta = ksvc["metadata"]
            have = list(meta.get("finalizers") or [])
            held = ROUTED_FINALIZER in have
            terminating = _terminating(ksvc)
            want = hold and bool(reaching.get(name))
            if terminating:
                if want and held:
                    json_log.event(log, "deletion held", namespace=namespace, service=name, models=reaching[name],
                                   reason="a model's route still reaches it: released once that route is in the pool")
                if want or not held:
                    continue  # (no finalizer can be added to an object being deleted)
            elif want == held:
                continue
            finalizers = have + [ROUTED_FINALIZER] if want else [f for f in have if f != ROUTED_FINALIZER]
            try:
                written = self.api.set_finalizers(namespace, name, finalizers, meta.get("resourceVersion"))
            except ApiSkip as exc:
                out.skipped.append({"service": f"{namespace}/{name}", "reason": f"finalizer not written: {exc}"})
                continue
            except ApiTransient as exc:
                out.transient.append(str(exc))
                continue
            outcome = "conflict" if written is None else "added" if want else "released"
            metrics.DELETION_HOLDS.labels(namespace, outcome).inc()
            json_log.event(log, "deletion hold", namespace=namespace, service=name, outcome=outcome,
                           terminating=terminating)

    def _release_all(self, namespace: str, ksvcs: dict[str, dict]) -> None:
        """ROUTED_FINALIZER off every Service carrying it: placement is off in this namespace."""
        for name, ksvc in sorted(ksvcs.items()):
            have = list(ksvc["metadata"].get("finalizers") or [])
            if ROUTED_FINALIZER not in have:
                continue
            try:
                written = self.api.set_finalizers(namespace, name, [f for f in have if f != ROUTED_FINALIZER],
                                                  ksvc["metadata"].get("resourceVersion"))
            except (ApiSkip, ApiTransient) as exc:
                json_log.event(log, "deletion hold", logging.WARNING, namespace=namespace, service=name,
                               outcome="failed", reason=f"placement is off here, release failed: {exc}")
                continue
            outcome = "conflict" if written is None else "released"
            metrics.DELETION_HOLDS.labels(namespace, outcome).inc()
            json_log.event(log, "deletion hold", namespace=namespace, service=name, outcome=outcome,
                           reason="placement is off in this namespace (no pool, or more than one)")

    def _keep_alive(self, namespace: str, ksvc: dict, targets: dict[str, dict], value: str | None, dry_run: bool,
                    legacy: bool, out: NamespacePlacement) -> str | None:
        """Carry the plan's keep-alive on the tier's routed Revisions (PodAutoscalers on <= 1.20),
        in place: RETENTION where it differs; None restores the template's own value. Returns
        the value in force."""
        template = (((ksvc.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("annotations") or {}
        desired = value if value is not None else template.get(plan.RETENTION)
        for revision in _routed(ksvc):
            target = targets.get(revision)
            if target is None:
                continue
            have = (target["metadata"].get("annotations") or {}).get(plan.RETENTION)
            if have == desired or dry_run:
                continue
            try:
                self.api.patch_annotations(namespace, revision, {plan.RETENTION: desired},
                                           target["metadata"].get("resourceVersion"), legacy)
                metrics.KEEP_ALIVE.labels(namespace, "set" if desired is not None else "restored").inc()
                json_log.event(log, "keep-alive", namespace=namespace, revision=revision, retention=desired)
            except ApiSkip as exc:
                out.skipped.append({"service": f"{namespace}/{ksvc['metadata']['name']}",
                                    "reason": f"keep-alive not written: {exc}"})
            except ApiTransient as exc:
                out.transient.append(str(exc))
        return desired

    def _hold_pool(self, out: NamespacePlacement, namespace: str, pool_name: str, pool: dict, targets: dict,
                   reason: str) -> NamespacePlacement:
        out.entries[pool_name] = ServiceForecast(namespace, pool_name, None, reason)
        out.floors[pool_name] = _current(pool, targets)
        out.records.append({"pool": f"{namespace}/{pool_name}", "reason": reason})
        return out


def _uid(obj: dict) -> str:
    meta = obj["metadata"]
    return meta.get("uid") or f"{meta['namespace']}/{meta['name']}"


def _routed(ksvc: dict) -> list[str]:
    return [t["revisionName"] for t in (ksvc.get("status") or {}).get("traffic") or []
            if t.get("percent", 0) > 0 and t.get("revisionName")]


def _ready_pods(ksvc: dict, targets: dict[str, dict]) -> int:
    """Ready pods over the Service's routed Revisions (Revision status.actualReplicas, or a
    PodAutoscaler's status.actualScale on the <= 1.20 path)."""
    total = 0
    for name in _routed(ksvc):
        status = (targets.get(name) or {}).get("status") or {}
        value = status.get("actualReplicas", status.get("actualScale"))
        total += int(value) if isinstance(value, int) else 0
    return total


def _dedicated_ready(ksvc: dict | None, targets: dict[str, dict]) -> bool:
    """Ready to take a model's traffic now: the Service is Ready and every routed Revision has a
    ready pod (Ready alone is true at zero too, which would make the move's first request cold)."""
    if ksvc is None:
        return False
    conditions = {c.get("type"): c.get("status") for c in (ksvc.get("status") or {}).get("conditions") or []}
    routed = _routed(ksvc)
    return conditions.get("Ready") == "True" and bool(routed) and all(
        _ready_pods({"status": {"traffic": [{"revisionName": r, "percent": 100}]}}, targets) > 0 for r in routed)


def _terminating(ksvc: dict) -> bool:
    """Deleted, held by a finalizer: it still serves, but is going."""
    return bool(ksvc["metadata"].get("deletionTimestamp"))


def _failing(ksvc: dict | None) -> bool:
    """The Service says it cannot serve: its Ready condition is False."""
    if ksvc is None:
        return True
    conditions = {c.get("type"): c.get("status") for c in (ksvc.get("status") or {}).get("conditions") or []}
    return conditions.get("Ready") == "False"


POOL_MEMORY_ENV = "POOL_MEMORY_MB"
MODEL_MEMORY_ANNOTATION = "predictive-scaling.io/model-memory-mb"
MODEL_LOAD_ANNOTATION = "predictive-scaling.io/model-load-ms"


def capacity_models(pool: dict, settings: PoolSettings) -> int:
    """The pool's capacity in models, from the one place infer reads it: the pool Service's own
    POOL_MEMORY_MB (its container's env), over a model's memory (the pool's annotation
    `predictive-scaling.io/model-memory-mb`, else POOL_MODEL_MEMORY_MB). POOL_MODELS_PER_POD
    when the Service sets no POOL_MEMORY_MB."""
    spec = ((pool.get("spec") or {}).get("template") or {}).get("spec") or {}
    memory = None
    for container in spec.get("containers") or []:
        for env in container.get("env") or []:
            if env.get("name") == POOL_MEMORY_ENV:
                memory = env.get("value")
    annotation = (pool["metadata"].get("annotations") or {}).get(MODEL_MEMORY_ANNOTATION)
    try:
        model_mb = float(annotation) if annotation is not None else settings.model_memory_mb
        if memory is not None and model_mb > 0:
            return policy.models_per_pod(float(memory), model_mb)
    except ValueError:
        pass
    return settings.models_per_pod


def model_load_ms(pool: dict, settings: PoolSettings) -> float:
    """A model's load time in the pool's pods: the pool Service's annotation
    `predictive-scaling.io/model-load-ms`, else POOL_MODEL_LOAD_MS (the fleet backtest's default
    reads it the same way)."""
    annotation = (pool["metadata"].get("annotations") or {}).get(MODEL_LOAD_ANNOTATION)
    try:
        value = float(annotation) if annotation is not None else settings.model_load_ms
    except ValueError:
        return settings.model_load_ms
    return value if math.isfinite(value) and value >= 0 else settings.model_load_ms


def plan_settings(pool: PoolSettings, service: PolicySettings) -> plan.PoolPlanSettings:
    """The pool plan's settings from the function's: the one table of knobs (pool_settings.py,
    policy_knobs.py), the pool Service's own policy annotations applied."""
    return plan.PoolPlanSettings(
        placement=PlacementSettings(capacity_rps=service.capacity_rps, dedicate_share=pool.dedicate_share,
                                    pool_share=pool.pool_share, hold_minutes=pool.hold_minutes),
        every_minutes=pool.every_minutes, cost=service.cold_start_cost_pod_s,
        choose_every_minutes=pool.choose_every_minutes, history_minutes=pool.history_minutes,
        fleet_budget=pool.fleet_budget, not_ready_bound_s=pool.not_ready_s,
        sizing=PolicySettings(capacity_rps=service.capacity_rps, max_scale=service.max_scale,
                              burst_risk=service.burst_risk, headroom=service.headroom))


def _settled(mapping: dict) -> bool:
    """The mapping is programmed as its spec says: reconciled at its generation, and Ready."""
    status = mapping.get("status") or {}
    ready = {c.get("type"): c.get("status") for c in status.get("conditions") or []}.get("Ready")
    return status.get("observedGeneration") == mapping["metadata"].get("generation") and ready == "True"


def _current(ksvc: dict, targets: dict[str, dict]) -> int:
    """The min-scale the Service's routed Revisions carry now."""
    values = [((targets.get(r) or {}).get("metadata", {}).get("annotations") or {}).get(MIN_SCALE) for r in _routed(ksvc)]
    return max((int(v) for v in values if isinstance(v, str) and v.isdigit()), default=0)
