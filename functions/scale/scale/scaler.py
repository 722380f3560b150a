"""One forecast event in -> min-scale (and window) decided for every opted-in service it names,
applied on the routed Revisions where it changes -> one decision event out.

Safety rules, in the order they bite: only Services carrying the opt-in label are looked at;
an annotation that does not parse skips the service; a forecast older than the last one applied
is out of order and ignored; no forecast, a `no-data` entry, or an event too old to trust holds
the current min-scale (min_scale_policy.decide never lowers on those); what a Revision carries is
read from the cluster every event (listed once per namespace), and a Revision is written only
when that differs from the decision, so a min-scale someone else wrote is corrected, and one left
by an interleaved replica does not stick; a Revision that leaves traffic gets its own values
back; `spec` is never written.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Iterator

import redis
from cloudevents.core.v1.event import CloudEvent

from fncommon import json_log
from fncommon.cloudevent_io import BadEvent, Outcome, RetryLater

from . import events
from .annotations import BadAnnotation, ServicePolicy, service_policy
from . import metrics
from .knative_api import ApiSkip, ApiTransient, KnativeApi
from .decision import Plan, ServiceView, plan
from .min_scale_policy import LEAD_MINUTES, p_any_in
from .pool_placement import PoolPlacement
from .route_guard import RouteGuard
from .settings import ScaleSettings
from .state_store import ServiceState, StateStore
from .warmup import WarmUp

log = logging.getLogger("scale.scaler")
WRITE_CHUNK = 25
_Work = tuple[str, dict, dict[str, dict], dict[str, dict], events.ServiceForecast | None, ServicePolicy, ServiceState | None]
"""One service's arguments to Scaler._decide, before the tick's own (now, freshness, age)."""
_Outcome = tuple[tuple[dict, ServiceState | None] | None, Exception | None]
"""One service's (record, new state), or the API error that stopped it."""
POLICY_MEMO = 200_000


class Scaler:
    def __init__(self, settings: ScaleSettings, api: KnativeApi | None = None, client: redis.Redis | None = None):
        self.settings = settings
        self.api = api or KnativeApi(settings.api_url, settings.api_retries, reads=settings.api_reads,
                                     page_size=settings.api_page_size, relist_s=settings.api_relist_s,
                                     watch_timeout_s=settings.api_watch_timeout_s,
                                     connections=settings.api_writers + 4)
        # Writes of one event go through a bounded pool: 10,000 patches one after the other take
        # longer than the minute they are for; `API_WRITERS` in flight at once, never more.
        self._writers = ThreadPoolExecutor(settings.api_writers, thread_name_prefix="scale-writer") \
            if settings.api_writers > 1 else None
        self.store = StateStore(client or redis.Redis.from_url(settings.redis_url, password=settings.redis_password,
                                                               socket_timeout=5, socket_connect_timeout=2),
                                settings.dedupe_ttl_s, settings.decision_history, settings.state_ttl_s)
        self.warmup = WarmUp(settings.warmup_path, settings.warmup_timeout_s, settings.warmup_gateway)
        self._legacy: bool | None = {"1.21": False, "1.20": True}.get(settings.knative_version)
        self.metrics = metrics.DecisionMetrics(settings.metrics_max_services)
        self._lock = threading.Lock()
        self._policies: dict[str, tuple[str, ServicePolicy]] = {}
        # -- model pool placement (pool_placement.py): only namespaces with a pool Service use it
        self.placement = PoolPlacement(settings.pool, self.api, self.store.redis, settings.state_ttl_s,
                                       settings.opt_in_label)
        self.guard = RouteGuard(self.api, self.placement)

    def close(self) -> None:
        if self._writers is not None:
            self._writers.shutdown(wait=False, cancel_futures=True)
        self.guard.close()
        self.api.close()
        self.placement.close()
        self.warmup.close()
        self.store.close()

    def handle(self, event: CloudEvent) -> Outcome:
        """Blocking: the function shim runs it off the event loop (probes keep answering).

        CPython's cyclic collector is paused while an event is handled: an event at 10,000
        services allocates about a million short-lived containers, each of which counts towards
        the next collection, and the older generations' collections re-scan the objects the
        watch cache took in since its last list: a fifth or so of a steady event's CPU at 10,000
        services (measured in one process against the API double, 2026-12-07). What an event drops is freed by reference counting as before; a cycle it
        leaves (an exception kept with its traceback) is collected once the collector resumes,
        at the end of the event, whatever its outcome."""
        with self._lock, _collector_paused():
            return self._handle(event)

    def _handle(self, event: CloudEvent) -> Outcome:
        started = time.perf_counter()
        calls_before = self.api.calls
        fields = {"ce_id": event.get_id(), "ce_source": event.get_source(), "ce_type": event.get_type()}
        claimed = False
        try:
            forecast = events.parse_forecast(event)
            events.check_trust(event, forecast, self.settings.accepted_sources, self.settings.max_ahead_s)
            claim = self.store.claim(event.get_source(), event.get_id())
            if claim is None:
                raise RetryLater("this event is being handled by another delivery")
            if not claim:
                json_log.event(log, "duplicate event: already applied", **fields, outcome="duplicate")
                metrics.event("duplicate")
                return Outcome(202, headers={"X-Duplicate": "true"})
            claimed = True
            data, transient = self._apply(forecast)
            if transient:
                raise RetryLater("; ".join(sorted(set(transient)))[:500])
            self.store.done(event.get_source(), event.get_id())
        except BadEvent as exc:
            json_log.event(log, "rejected event", logging.WARNING, **fields, outcome="rejected", reason=str(exc))
            metrics.event("rejected")
            return Outcome.of(exc)
        except (redis.RedisError, RetryLater, ApiTransient) as exc:
            if claimed:
                self.store.release(event.get_source(), event.get_id())
            reason = f"{type(exc).__name__}: {exc}"
            json_log.event(log, "retry later", logging.ERROR, **fields, outcome="retry", reason=reason)
            metrics.event("retry")
            return Outcome.of(RetryLater(reason))
        changed = [d for d in data["decisions"] if d["applied"]]
        json_log.event(log, "decided", **fields, outcome="decided", tick=data["tick"],
                       services=len(data["decisions"]), applied=len(changed), skipped=len(data["skipped"]),
                       api_calls=self.api.calls - calls_before, seconds=round(time.perf_counter() - started, 3))
        metrics.event("decided")
        self.metrics.record(data)
        return Outcome(200, reply=events.decision_event(self.settings.event_source, event, forecast.tick, data))

    # -- the decision ----------------------------------------------------------------------
    def _apply(self, forecast: events.ParsedForecast) -> tuple[dict, list[str]]:
        now_s = forecast.tick.timestamp()
        wall_s = datetime.now(timezone.utc).timestamp()
        age = wall_s - now_s
        trust_until_s = wall_s + self.settings.max_ahead_s  # a stored tick after this is not believed
        too_old = self.settings.max_forecast_age_s > 0 and age > self.settings.max_forecast_age_s
        tick_text = forecast.tick.strftime("%Y-%m-%dT%H:%M:%SZ")
        try:
            legacy = self._podautoscaler_actuation()
        except ApiSkip as exc:
            return {"tick": tick_text, "forecast_model": forecast.model_version, "actuation": None, "decisions": [],
                    "skipped": [{"service": e.key, "reason": f"cannot tell the Knative version, untouched: {exc}"}
                                for e in forecast.services]}, []
        by_namespace: dict[str, dict[str, events.ServiceForecast]] = defaultdict(dict)
        for entry in forecast.services:
            by_namespace[entry.namespace][entry.name] = entry
        decisions: list[dict] = []
        skipped: list[dict] = []
        transient: list[str] = []
        states_out: dict[str, ServiceState] = {}
        placement_records: list[dict] = []
        placement_states: dict = {}
        for namespace, entries in sorted(by_namespace.items()):
            if not self.settings.manages(namespace):
                skipped += [{"service": f"{namespace}/{n}", "reason": "namespace not managed (MANAGED_NAMESPACES): untouched"}
                            for n in entries]
                continue
            try:
                ksvcs = {s["metadata"]["name"]: s for s in self.api.list_services(namespace, self.settings.opt_in_label)}
                targets = {t["metadata"]["name"]: t for t in self.api.list_targets(namespace, legacy)} if ksvcs else {}
            except ApiSkip as exc:
                skipped += [{"service": f"{namespace}/{n}", "reason": f"cannot list services: {exc}"} for n in entries]
                continue
            except ApiTransient as exc:
                transient.append(str(exc))
                skipped += [{"service": f"{namespace}/{n}", "reason": f"API unavailable, will retry: {exc}"} for n in entries]
                continue
            # -- model pool placement: moves, pre-loads, and the pool's / dedicated Services' forecasts
            placed = self.placement.run(namespace, ksvcs, targets, entries, now_s, not too_old, trust_until_s,
                                        self.settings.policy, self.settings.dry_run, legacy)
            if placed is not None:
                entries = {**{k: v for k, v in entries.items() if k not in placed.consumed}, **placed.entries}
                placement_records += placed.records
                placement_states.update(placed.states)
                skipped += placed.skipped
                transient += placed.transient
            # -- end of placement
            for name in sorted(set(entries) - set(ksvcs)):
                skipped.append({"service": f"{namespace}/{name}",
                                "reason": "not opted in (label {}={}) or not found: untouched".format(*self.settings.opt_in_label)})
            states = self.store.load([_uid(s) for s in ksvcs.values()])
            owned: dict[str, dict[str, dict]] = defaultdict(dict)  # one pass, not one per service
            for revision, target in targets.items():
                service = (target["metadata"].get("labels") or {}).get("serving.knative.dev/service")
                if service is not None:
                    owned[service][revision] = target
            work: list[_Work] = []
            for name, ksvc in sorted(ksvcs.items()):
                key = f"{namespace}/{name}"
                try:
                    policy = self._policy(ksvc)
                except BadAnnotation as exc:
                    skipped.append({"service": key, "reason": f"bad annotation, untouched: {exc}"})
                    continue
                if placed is not None:
                    policy = placed.policy_for(name, policy)  # placement's floor and price: a move's target, a route's source, the tier's warmth
                state = states.get(_uid(ksvc))
                if state is not None and now_s < state.tick_s <= trust_until_s:
                    skipped.append({"service": key, "reason": "out of order: a newer forecast was already applied"})
                    json_log.event(log, "out-of-order forecast ignored", logging.WARNING, service=key,
                                   tick=forecast.tick.isoformat(), applied_tick=state.tick_s)
                    continue
                work.append((key, ksvc, targets, owned.get(name, {}), entries.get(name), policy, state))

            # Decided here, in one pass (pure work: threads would only contend for the
            # interpreter); only the services with something to write go to the writers' pool.
            results: list[_Outcome] = [(None, None)] * len(work)
            writes: list[tuple[int, tuple[Plan, list[str], str]]] = []
            for k, item in enumerate(work):
                try:
                    decided = self._decide(*item, now_s, not too_old, age)
                except (ApiSkip, ApiTransient) as exc:
                    results[k] = (None, exc)
                    continue
                if item[5].dry_run or not (decided[0].writes or decided[0].releases):
                    results[k] = (self._finish(item[1], item[2], item[4], item[5], item[6], *decided, now_s, legacy), None)
                else:
                    writes.append((k, decided))

            def chunk(items: list[tuple[int, tuple[Plan, list[str], str]]]) -> list[tuple[int, _Outcome]]:
                done: list[tuple[int, _Outcome]] = []
                for k, decided in items:
                    item = work[k]
                    try:
                        done.append((k, (self._finish(item[1], item[2], item[4], item[5], item[6], *decided, now_s, legacy), None)))
                    except (ApiSkip, ApiTransient) as exc:
                        done.append((k, (None, exc)))
                return done

            # chunks of WRITE_CHUNK services per task: the pool's overhead stays small at 10,000
            # services, and at most API_WRITERS patches are in flight
            chunks = [writes[at:at + WRITE_CHUNK] for at in range(0, len(writes), WRITE_CHUNK)]
            mapped = self._writers.map(chunk, chunks) if self._writers is not None and len(chunks) > 1 else map(chunk, chunks)
            for done in mapped:
                for k, outcome in done:
                    results[k] = outcome
            for (key, ksvc, *_), (result, error) in zip(work, results):
                if isinstance(error, ApiSkip):
                    skipped.append({"service": key, "reason": f"API refused, skipped: {error}"})
                    json_log.event(log, "service skipped", logging.WARNING, service=key, reason=str(error))
                    continue
                if error is not None or result is None:
                    transient.append(str(error))
                    skipped.append({"service": key, "reason": f"API unavailable, will retry: {error}"})
                    continue
                decision, new_state = result
                decisions.append(decision)
                if new_state is not None:
                    states_out[_uid(ksvc)] = new_state
        data: dict[str, Any] = {"tick": tick_text, "forecast_model": forecast.model_version,
                                "actuation": "podautoscaler" if legacy else "revision", "decisions": decisions,
                                "skipped": skipped}
        if placement_records:
            data["placement"] = placement_records
        self.store.save(states_out, [{"tick": data["tick"], **d} for d in decisions], trust_until_s)
        self.placement.save(placement_states, trust_until_s)
        return data, transient

    def _service(self, key: str, ksvc: dict, targets: dict[str, dict], owned: dict[str, dict],
                 entry: events.ServiceForecast | None, policy: ServicePolicy, state: ServiceState | None, now_s: float,
                 event_fresh: bool, legacy: bool, age_s: float) -> tuple[dict, ServiceState | None]:
        """Read what the cluster carries, let decision.plan decide, write what it says. `owned`:
        the Revisions labelled as this Service's."""
        decided = self._decide(key, ksvc, targets, owned, entry, policy, state, now_s, event_fresh, age_s)
        return self._finish(ksvc, targets, entry, policy, state, *decided, now_s, legacy)

    def _decide(self, key: str, ksvc: dict, targets: dict[str, dict], owned: dict[str, dict],
                entry: events.ServiceForecast | None, policy: ServicePolicy, state: ServiceState | None, now_s: float,
                event_fresh: bool, age_s: float) -> tuple[Plan, list[str], str]:
        """What the cluster carries and what decision.plan makes of it (nothing is written):
        (the plan, the routed Revisions, the record's key). `owned`: the Revisions labelled as
        this Service's."""
        routed = [t["revisionName"] for t in (ksvc.get("status") or {}).get("traffic") or []
                  if t.get("percent", 0) > 0 and t.get("revisionName")]
        if not routed:
            raise ApiSkip(0, "no Revision is routed yet (status.traffic is empty)")
        missing = [r for r in routed if r not in targets]
        if missing:
            raise ApiSkip(404, f"routed Revision {missing[0]} is not in the namespace's list (yet)")
        mine = {**owned, **{r: targets[r] for r in routed}}
        template = (((ksvc.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("annotations") or {}
        view = ServiceView(routed, {r: t["metadata"].get("annotations") or {} for r, t in mine.items()}, template)
        if entry is None:
            why = "no forecast for this service in the event"
        elif entry.minutes is None:
            why = f"forecast function had no data ({entry.reason})"
        else:
            why = None
        decided = plan(view, policy, entry.minutes if entry is not None else None, now_s,
                       state.raised_at_s if state is not None else None, state_lost=state is None, missing=why,
                       stale_age_s=None if event_fresh else age_s,
                       skill=entry.skill if entry is not None else None,
                       observed=entry.observed_counts if entry is not None else None,
                       fallback=self.settings.fallback,
                       last_rps=entry.last_observed_rps if entry is not None else None)
        return decided, routed, key

    def _finish(self, ksvc: dict, targets: dict[str, dict], entry: events.ServiceForecast | None,
                policy: ServicePolicy, state: ServiceState | None, decided: Plan, routed: list[str], key: str,
                now_s: float, legacy: bool) -> tuple[dict, ServiceState | None]:
        """Write what the plan says (when it says anything) and make the decision's record.
        Runs in the writers' pool when there is a write: no shared state."""
        namespace = ksvc["metadata"]["namespace"]
        applied = False
        released: list[str] = []
        if not policy.dry_run:
            still_current = self._still_current(_uid(ksvc), now_s)
            for revision, patch in decided.writes.items():
                result = self.api.patch_annotations(namespace, revision, patch,
                                                    targets[revision]["metadata"].get("resourceVersion"), legacy,
                                                    still_current)
                if result is None:
                    raise ApiSkip(409, "a newer forecast was applied by another replica meanwhile")
                applied = True
            for revision, patch in decided.releases.items():
                self.api.patch_annotations(namespace, revision, patch,
                                           targets[revision]["metadata"].get("resourceVersion"), legacy)
                released.append(revision)
        warmed = False
        if applied and decided.warm_up and self.settings.warmup:
            url = (ksvc.get("status") or {}).get("url")
            if url:
                self.warmup.send(url)
                warmed = True
        minutes = entry.minutes if entry is not None else None
        covered = (minutes or [])[:LEAD_MINUTES]
        record = {
            "service": key, "revisions": routed, "previous_min_scale": decided.previous, "min_scale": decided.min_scale,
            "window": decided.window, "reason": decided.reason, "applied": applied, "dry_run": policy.dry_run,
            "warmup": warmed,
            "forecast": ({"p_any_covered": round(p_any_in(covered), 4),
                          "upper_rps_max": round(max(m.upper_rps for m in covered), 4)} if covered else None),
        }
        if released:
            record["released"] = released
        if decided.baseline:
            record["fallback"] = "keep-alive"
        if policy.dry_run:
            # nothing was written: remember the decision clock only
            return record, ServiceState(now_s, decided.previous, state.raised_at_s if state else None)
        return record, ServiceState(now_s, decided.min_scale, decided.raised_at_s)

    def _policy(self, ksvc: dict) -> ServicePolicy:
        """service_policy of the Service, parsed again only when the Service changed (its
        resourceVersion): 10,000 annotation sets are not re-read every minute."""
        meta = ksvc["metadata"]
        uid, version = _uid(ksvc), meta.get("resourceVersion")
        known = self._policies.get(uid)
        if known is not None and version is not None and known[0] == version:
            return known[1]
        policy = service_policy(ksvc, self.settings.policy, self.settings.dry_run)
        if version is not None:
            if len(self._policies) >= POLICY_MEMO:
                self._policies.clear()  # bounded: services deleted long ago do not pile up
            self._policies[uid] = (version, policy)
        return policy

    def _still_current(self, uid: str, tick_s: float):
        def check() -> bool:
            state = self.store.load([uid]).get(uid)
            return state is None or state.tick_s <= tick_s
        return check

    def _podautoscaler_actuation(self) -> bool:
        """True for the <= 1.20 path (patch PodAutoscalers), decided once per process."""
        if self._legacy is None:
            major, minor = self.api.knative_version()
            self._legacy = (major, minor) < (1, 21)
            json_log.event(log, "knative version detected", version=f"{major}.{minor}",
                           actuation="podautoscaler" if self._legacy else "revision")
        return self._legacy


@contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off for the block, back on after it (if it was on)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _uid(ksvc: dict) -> str:
    meta = ksvc["metadata"]
    return meta.get("uid") or f"{meta['namespace']}/{meta['name']}"
