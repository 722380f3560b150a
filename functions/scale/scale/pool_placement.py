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

Per event and namespace:
1. placement.place on each model's expected rate (placement.expected_rate: the mean of its
   next-minute forecasts over the last hour, kept in Redis with the tier and the hysteresis
   clock), every PLACEMENT_EVERY_MINUTES;
2. pre-loads (V2 repository load through the pool's URL) of the pooled models whose P(a request
   in the covered minutes) reaches the pool's warm threshold, likeliest first, at most
   POOL_MODELS_PER_POD, and of every model about to move into the pool; only while the pool has a
   ready pod (else the pool's own min-scale raise and warm-up start it, and the next tick loads);
3. moves (placement.route_step): a route is re-pointed only when its target is ready (a dedicated
   Service with ready pods on its routed Revisions; the model loaded in a warm pool) and the
   previous move is programmed; until then the target is warmed (a floor of one pod) and the
   source keeps its min-scale (never lowered while the route may still send it requests);
4. the forecasts the scaler then decides min-scale from: the pool's is the sum of its models'
   (placement.pooled_forecast) over every model routed to it, moving in or moving out; a
   dedicated Service gets its model's forecast while it serves or is about to, an idle one
   otherwise (it then goes to zero after the cool-down). A pooled model without a forecast never
   lets the pool be lowered (missing data holds).
Dry run (DRY_RUN or the pool's annotation): the same decisions and reports, no pre-load and no
patch; the placement state is still kept, so that the hysteresis is the one a real run has.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field

import redis

from . import json_log
from . import placement as policy
from . import metrics
from .annotations import BadAnnotation, ServicePolicy, service_policy
from .events import ServiceForecast
from .knative_api import ApiSkip, ApiTransient, KnativeApi
from .min_scale_policy import MinuteForecast
from .placement import DEDICATED, POOL, Placement, PlacementSettings
from .placement_store import PlacementState, PlacementStore
from .pool_client import PoolClient, PoolError
from .pool_settings import PoolSettings

log = logging.getLogger("scale.placement")

POOL_LABEL = "predictive-scaling.io/pool"
MODEL_LABEL = "predictive-scaling.io/model"
DEDICATED_ANNOTATION = "predictive-scaling.io/dedicated-service"
MIN_SCALE = "autoscaling.knative.dev/min-scale"
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

    def policy_for(self, name: str, service: ServicePolicy) -> ServicePolicy:
        """The Service's policy with this tick's floor (never above its max-scale)."""
        floor = self.floors.get(name)
        if floor is None or floor <= service.settings.min_scale:
            return service
        floor = min(floor, service.settings.max_scale)
        return dataclasses.replace(service, settings=dataclasses.replace(service.settings, min_scale=floor))


class PoolPlacement:
    def __init__(self, settings: PoolSettings, api: KnativeApi, client: redis.Redis, state_ttl_s: int,
                 opt_in_label: tuple[str, str]):
        self.settings = settings
        self.api = api
        self.store = PlacementStore(client, state_ttl_s)
        self.pool = PoolClient(settings.preload_timeout_s, settings.gateway, settings.control_url)
        self.opt_in_label = opt_in_label

    def close(self) -> None:
        self.pool.close()

    def save(self, states: dict[str, PlacementState], trust_until_s: float) -> None:
        self.store.save(states, trust_until_s)

    def run(self, namespace: str, ksvcs: dict[str, dict], targets: dict[str, dict], entries: dict[str, ServiceForecast],
            now_s: float, fresh: bool, trust_until_s: float, defaults, dry_run_default: bool) -> NamespacePlacement | None:
        """None when the namespace has no pool (no API call is made for it then)."""
        pools = sorted(n for n, s in ksvcs.items() if (s["metadata"].get("labels") or {}).get(POOL_LABEL) == "true")
        if not pools:
            return None
        out = NamespacePlacement()
        if len(pools) > 1:
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
        settings = PlacementSettings(capacity_rps=pool_policy.settings.capacity_rps, dedicate_share=self.settings.dedicate_share,
                                     pool_share=self.settings.pool_share, hold_minutes=self.settings.hold_minutes)
        evaluate = fresh and int(now_s // 60) % self.settings.every_minutes == 0
        states = self.store.load([_uid(m) for m in mappings])
        pool_url = (pool.get("status") or {}).get("url") or ""
        pool_warm = _ready_pods(pool, targets) > 0

        models = []
        for mapping in sorted(mappings, key=lambda m: m["metadata"]["name"]):
            model = mapping["metadata"]["labels"][MODEL_LABEL]
            out.consumed.add(model)
            entry = entries.get(model)
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
            state = states.get(_uid(mapping))
            if state is not None and now_s < state.tick_s <= trust_until_s:
                record.update(decided=state.tier, action="hold", reason="out of order: a newer forecast was already applied")
                models.append(_Model(model, mapping, entry, routed, dedicated, _settled(mapping), state.tier, record, None))
                continue
            state = state or PlacementState(-math.inf, routed)
            samples = [(t, v) for t, v in state.samples if now_s - 3600 < t < now_s]
            if fresh and entry is not None and entry.minutes:
                samples.append((now_s, entry.minutes[0].point_rps))
            rate = policy.expected_rate(samples, now_s)
            current = Placement(state.tier, state.leaning_since)
            decided = policy.place(rate, current, now_s, settings) if evaluate else current
            why = None
            if decided.tier == DEDICATED and (not dedicated or dedicated not in ksvcs):
                decided, why = Placement(POOL, None), (f"dedicated Service {dedicated!r} not found or not opted in: "
                                                       "stays pooled" if dedicated else "no dedicated-service annotation: stays pooled")
            record.update(decided=decided.tier, rate_rps=None if math.isnan(rate) else round(rate, 4),
                          leaning_since=decided.leaning_since)
            if why:
                record["reason"] = why
            new_state = PlacementState(now_s, decided.tier, decided.leaning_since, samples)
            models.append(_Model(model, mapping, entry, routed, dedicated, _settled(mapping), decided.tier, record, new_state))

        # -- pre-loads: what the answering pool pod has, and what it should have before traffic --
        wanted = [m for m in models if m.decided == POOL and m.routed != POOL]  # about to move in: must be loaded
        pooled = {m.name: m.entry.minutes for m in models if m.routed == POOL and m.decided == POOL
                  and m.entry is not None and m.entry.minutes}
        hot = policy.preload(pooled, self.settings.models_per_pod, pool_policy.settings.warm_threshold)
        by_name = {m.name: m for m in models}
        wanted += [by_name[n] for n in hot if by_name[n] not in wanted]
        loaded: set[str] = set()
        if pool_warm and wanted:
            try:
                loaded = self.pool.loaded(pool_url)
            except PoolError as exc:
                json_log.event(log, "pool index failed", logging.WARNING, namespace=namespace, reason=str(exc))
                for m in wanted:
                    m.record["preload"] = {"outcome": "failed", "reason": f"repository index: {exc}"}
                wanted = []
        for m in wanted:
            if m.name in loaded:
                m.record["preload"] = {"outcome": "loaded already"}
                continue
            if not pool_warm:
                outcome = {"outcome": "deferred", "reason": "the pool has no ready pod yet: its min-scale is raised first"}
            elif dry_run:
                outcome = {"outcome": "dry_run", "reason": "would load"}
            else:
                try:
                    self.pool.load(pool_url, m.name)
                    loaded.add(m.name)
                    outcome = {"outcome": "loaded"}
                except PoolError as exc:
                    outcome = {"outcome": "failed", "reason": str(exc)}
            m.record["preload"] = outcome
            metrics.PRELOADS.labels(namespace, outcome["outcome"]).inc()
            json_log.event(log, "pre-load", namespace=namespace, model=m.name, **outcome)

        # -- moves, only onto a ready target --------------------------------------------------------
        for m in models:
            if m.state is None:
                continue  # out of order: hold
            target_ready = (_dedicated_ready(ksvcs.get(m.dedicated), targets) if m.decided == DEDICATED
                            else pool_warm and m.name in loaded)
            action = policy.route_step(m.decided, m.routed, m.settled, target_ready)
            if action == policy.MOVE and not fresh:
                action = "hold"
                m.record["reason"] = "forecast too old to move on"
            m.record["action"] = action
            target = m.dedicated if m.decided == DEDICATED else pool_name
            if action == policy.PREPARE:
                m.record["move"] = {"from": m.routed, "to": m.decided, "applied": False,
                                    "reason": f"waiting for {target} to be ready"
                                              + ("" if m.decided == DEDICATED else f" with {m.name} loaded")}
                metrics.MOVES.labels(namespace, m.decided, "waiting").inc()
            elif action == policy.MOVE:
                move = {"from": m.routed, "to": m.decided, "applied": False, "target": target}
                if dry_run:
                    move["reason"] = "dry run: would re-point the route"
                    metrics.MOVES.labels(namespace, m.decided, "dry_run").inc()
                else:
                    source = pool_name if m.routed == POOL else m.dedicated
                    try:
                        self.api.repoint_mapping(namespace, m.mapping["metadata"]["name"], source, target,
                                                 m.mapping["metadata"].get("resourceVersion"))
                        move["applied"] = True
                        m.routed, m.settled = m.decided, False
                        metrics.MOVES.labels(namespace, m.decided, "applied").inc()
                    except ApiSkip as exc:
                        move["reason"] = f"API refused, route unchanged: {exc}"
                        metrics.MOVES.labels(namespace, m.decided, "failed").inc()
                    except ApiTransient as exc:
                        move["reason"] = f"API unavailable, route unchanged, will retry: {exc}"
                        out.transient.append(str(exc))
                        metrics.MOVES.labels(namespace, m.decided, "failed").inc()
                m.record["move"] = move
                json_log.event(log, "move", namespace=namespace, model=m.name, **move)
            if m.state is not None:
                out.states[_uid(m.mapping)] = m.state
        for tier in (POOL, DEDICATED):
            metrics.MODELS.labels(namespace, tier).set(sum(1 for m in models if m.routed == tier))

        # -- the forecasts and floors the scaler decides min-scale from ----------------------------
        members = [m for m in models if m.routed == POOL or m.decided == POOL or not m.settled]
        with_data = [m.entry.minutes for m in members if m.entry is not None and m.entry.minutes]
        missing = [m.name for m in members if m.entry is None or not m.entry.minutes]
        pool_floor = 0
        if any((m.decided == POOL and m.routed != POOL) or (m.routed == POOL and not m.settled) for m in models):
            pool_floor = 1  # a move into the pool needs a warm pod to load the model in
        if missing or any(m.routed != POOL and not m.settled for m in members):
            pool_floor = max(pool_floor, _current(pool, targets))  # no data, or a route still draining: never lower
        if members and not with_data:
            out.entries[pool_name] = ServiceForecast(namespace, pool_name, None, "no forecast for any model routed to the pool")
        else:
            out.entries[pool_name] = ServiceForecast(namespace, pool_name, policy.pooled_forecast(with_data), "ok")
        out.floors[pool_name] = pool_floor
        out.records.append({"pool": f"{namespace}/{pool_name}", "models": sorted(m.name for m in members),
                            "without_forecast": sorted(missing), "floor": pool_floor, "warm": pool_warm,
                            "dry_run": dry_run})
        for m in models:
            if not m.dedicated or m.dedicated not in ksvcs:
                continue
            serving = m.routed == DEDICATED or m.decided == DEDICATED or not m.settled
            if serving:
                out.entries[m.dedicated] = m.entry or ServiceForecast(namespace, m.dedicated, None,
                                                                      f"no forecast for model {m.name}")
            else:
                out.entries[m.dedicated] = ServiceForecast(namespace, m.dedicated, IDLE, "ok")
            floor = 0
            if (m.decided == DEDICATED and m.routed != DEDICATED) or (m.routed == DEDICATED and not m.settled):
                floor = 1
            if m.routed != DEDICATED and not m.settled:
                floor = max(floor, _current(ksvcs[m.dedicated], targets))  # its route may still send requests
            out.floors[m.dedicated] = floor
        out.records[:0] = [m.record for m in models]
        return out

    def _hold_pool(self, out: NamespacePlacement, namespace: str, pool_name: str, pool: dict, targets: dict,
                   reason: str) -> NamespacePlacement:
        out.entries[pool_name] = ServiceForecast(namespace, pool_name, None, reason)
        out.floors[pool_name] = _current(pool, targets)
        out.records.append({"pool": f"{namespace}/{pool_name}", "reason": reason})
        return out


@dataclass
class _Model:
    name: str
    mapping: dict
    entry: ServiceForecast | None
    routed: str
    dedicated: str | None
    settled: bool
    decided: str
    record: dict
    state: PlacementState | None


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


def _settled(mapping: dict) -> bool:
    """The mapping is programmed as its spec says: reconciled at its generation, and Ready."""
    status = mapping.get("status") or {}
    ready = {c.get("type"): c.get("status") for c in status.get("conditions") or []}.get("Ready")
    return status.get("observedGeneration") == mapping["metadata"].get("generation") and ready == "True"


def _current(ksvc: dict, targets: dict[str, dict]) -> int:
    """The min-scale the Service's routed Revisions carry now."""
    values = [((targets.get(r) or {}).get("metadata", {}).get("annotations") or {}).get(MIN_SCALE) for r in _routed(ksvc)]
    return max((int(v) for v in values if isinstance(v, str) and v.isdigit()), default=0)
