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

import logging
import threading
import time
from collections import defaultdict
from datetime import datetime, timezone

import redis
from cloudevents.core.v1.event import CloudEvent

from . import events, json_log
from .cloudevent_io import BadEvent, Outcome, RetryLater
from .annotations import BadAnnotation, ServicePolicy, service_policy
from .knative_api import ApiSkip, ApiTransient, KnativeApi
from .min_scale_policy import decide, p_any_in
from .settings import ScaleSettings
from .state_store import ServiceState, StateStore
from .warmup import WarmUp

log = logging.getLogger("scale.scaler")
MIN_SCALE = "autoscaling.knative.dev/min-scale"
WINDOW = "autoscaling.knative.dev/window"
MANAGED = "predictive-scaling.io/min-scale"
"""Written beside every min-scale this function sets: marks the value as ours (to give back when
the Revision leaves traffic, and to hold a cool-down if our Redis state is lost)."""


class Scaler:
    def __init__(self, settings: ScaleSettings, api: KnativeApi | None = None, client: redis.Redis | None = None):
        self.settings = settings
        self.api = api or KnativeApi(settings.api_url, settings.api_retries)
        self.store = StateStore(client or redis.Redis.from_url(settings.redis_url, password=settings.redis_password,
                                                               socket_timeout=5, socket_connect_timeout=2),
                                settings.dedupe_ttl_s, settings.decision_history, settings.state_ttl_s)
        self.warmup = WarmUp(settings.warmup_path, settings.warmup_timeout_s, settings.warmup_gateway)
        self._legacy: bool | None = {"1.21": False, "1.20": True}.get(settings.knative_version)
        self._lock = threading.Lock()

    def close(self) -> None:
        self.warmup.close()
        self.store.close()

    def handle(self, event: CloudEvent) -> Outcome:
        """Blocking: the function shim runs it off the event loop (probes keep answering)."""
        with self._lock:
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
                return Outcome(202, headers={"X-Duplicate": "true"})
            claimed = True
            data, transient = self._apply(forecast)
            if transient:
                raise RetryLater("; ".join(sorted(set(transient)))[:500])
            self.store.done(event.get_source(), event.get_id())
        except BadEvent as exc:
            json_log.event(log, "rejected event", logging.WARNING, **fields, outcome="rejected", reason=str(exc))
            return Outcome.of(exc)
        except (redis.RedisError, RetryLater, ApiTransient) as exc:
            if claimed:
                self.store.release(event.get_source(), event.get_id())
            reason = f"{type(exc).__name__}: {exc}"
            json_log.event(log, "retry later", logging.ERROR, **fields, outcome="retry", reason=reason)
            return Outcome.of(RetryLater(reason))
        changed = [d for d in data["decisions"] if d["applied"]]
        json_log.event(log, "decided", **fields, outcome="decided", tick=data["tick"],
                       services=len(data["decisions"]), applied=len(changed), skipped=len(data["skipped"]),
                       api_calls=self.api.calls - calls_before, seconds=round(time.perf_counter() - started, 3))
        return Outcome(200, reply=events.decision_event(self.settings.event_source, event, forecast.tick, data))

    # -- the decision ----------------------------------------------------------------------
    def _apply(self, forecast: events.ForecastTick) -> tuple[dict, list[str]]:
        now_s = forecast.tick.timestamp()
        wall_s = datetime.now(timezone.utc).timestamp()
        age = wall_s - now_s
        trust_until_s = wall_s + self.settings.max_ahead_s  # a stored tick after this is not believed
        too_old = self.settings.max_forecast_age_s > 0 and age > self.settings.max_forecast_age_s
        tick_text = forecast.tick.strftime("%Y-%m-%dT%H:%M:%SZ")
        try:
            legacy = self._podautoscaler_actuation()
        except ApiSkip as exc:
            skipped = [{"service": e.key, "reason": f"cannot tell the Knative version, untouched: {exc}"}
                       for e in forecast.services]
            return {"tick": tick_text, "forecast_model": forecast.model_version,
                    "actuation": None, "decisions": [], "skipped": skipped}, []
        by_namespace: dict[str, dict[str, events.ServiceForecast]] = defaultdict(dict)
        for entry in forecast.services:
            by_namespace[entry.namespace][entry.name] = entry
        decisions: list[dict] = []
        skipped: list[dict] = []
        transient: list[str] = []
        states_out: dict[str, ServiceState] = {}
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
            for name in sorted(set(entries) - set(ksvcs)):
                skipped.append({"service": f"{namespace}/{name}",
                                "reason": "not opted in (label {}={}) or not found: untouched".format(*self.settings.opt_in_label)})
            states = self.store.load([_uid(s) for s in ksvcs.values()])
            for name, ksvc in sorted(ksvcs.items()):
                key = f"{namespace}/{name}"
                uid = _uid(ksvc)
                try:
                    policy = service_policy(ksvc, self.settings.policy, self.settings.dry_run)
                except BadAnnotation as exc:
                    skipped.append({"service": key, "reason": f"bad annotation, untouched: {exc}"})
                    continue
                state = states.get(uid)
                if state is not None and now_s < state.tick_s <= trust_until_s:
                    skipped.append({"service": key, "reason": "out of order: a newer forecast was already applied"})
                    json_log.event(log, "out-of-order forecast ignored", logging.WARNING, service=key,
                                   tick=forecast.tick.isoformat(), applied_tick=state.tick_s)
                    continue
                try:
                    decision, new_state = self._service(key, ksvc, targets, entries.get(name), policy, state, now_s,
                                                        not too_old, legacy, age)
                except ApiSkip as exc:
                    skipped.append({"service": key, "reason": f"API refused, skipped: {exc}"})
                    json_log.event(log, "service skipped", logging.WARNING, service=key, reason=str(exc))
                    continue
                except ApiTransient as exc:
                    transient.append(str(exc))
                    skipped.append({"service": key, "reason": f"API unavailable, will retry: {exc}"})
                    continue
                decisions.append(decision)
                if new_state is not None:
                    states_out[uid] = new_state
        data = {"tick": tick_text, "forecast_model": forecast.model_version,
                "actuation": "podautoscaler" if legacy else "revision", "decisions": decisions, "skipped": skipped}
        self.store.save(states_out, [{"tick": data["tick"], **d} for d in decisions], trust_until_s)
        return data, transient

    def _service(self, key: str, ksvc: dict, targets: dict[str, dict], entry: events.ServiceForecast | None,
                 policy: ServicePolicy, state: ServiceState | None, now_s: float, event_fresh: bool, legacy: bool,
                 age_s: float) -> tuple[dict, ServiceState | None]:
        namespace, name = ksvc["metadata"]["namespace"], ksvc["metadata"]["name"]
        routed = [t["revisionName"] for t in (ksvc.get("status") or {}).get("traffic") or []
                  if t.get("percent", 0) > 0 and t.get("revisionName")]
        if not routed:
            raise ApiSkip(0, "no Revision is routed yet (status.traffic is empty)")
        missing = [r for r in routed if r not in targets]
        if missing:
            raise ApiSkip(404, f"routed Revision {missing[0]} is not in the namespace's list (yet)")
        live = {r: targets[r]["metadata"].get("annotations") or {} for r in routed}
        current = max((int(a[MIN_SCALE]) for a in live.values() if (a.get(MIN_SCALE) or "").isdigit()), default=0)
        ours = any(MANAGED in a for a in live.values())
        # The cool-down clock lives in Redis; if it is gone (evicted, expired) while a min-scale we
        # set is on the Revision, hold as if it was raised just now: never lower on lost state.
        raised_at = state.raised_at_s if state is not None else (now_s if ours and current > 0 else None)
        minutes = entry.minutes if entry is not None else None
        fresh = event_fresh and minutes is not None
        decision = decide(minutes, policy.settings, current, now_s, raised_at, fresh)
        reason = decision.reason
        if entry is None:
            reason = f"hold at {current}: no forecast for this service in the event"
        elif minutes is None:
            reason = f"hold at {current}: forecast function had no data ({entry.reason})"
        elif not event_fresh:
            reason = f"hold at {current}: forecast is {age_s:.0f} s old"
        window = _window_value(decision.window_s) if policy.may_set_window else None
        if window is None and policy.user_window is not None:
            window = policy.user_window  # restoring means the Service's own setting
        desired = {MIN_SCALE: str(decision.min_scale), WINDOW: window}
        held = decision.min_scale == current and (minutes is None or not fresh)
        applied = False
        still_current = self._still_current(_uid(ksvc), now_s)
        for revision in routed:
            have = live[revision]
            patch = {k: v for k, v in desired.items() if v != have.get(k)}
            if held:
                patch.pop(MIN_SCALE, None)  # holding never rewrites what the cluster carries
            if patch and not policy.dry_run:
                patch[MANAGED] = desired[MIN_SCALE]
                result = self.api.patch_annotations(namespace, revision, patch,
                                                    targets[revision]["metadata"].get("resourceVersion"), legacy,
                                                    still_current)
                if result is None:
                    raise ApiSkip(409, "a newer forecast was applied by another replica meanwhile")
                applied = True
        released = [] if policy.dry_run else self._release_unrouted(namespace, name, routed, targets, ksvc, legacy)
        warmed = False
        if applied and current == 0 and decision.min_scale > 0 and self.settings.warmup:
            url = (ksvc.get("status") or {}).get("url")
            if url:
                self.warmup.send(url)
                warmed = True
        covered = (minutes or [])[: max(1, policy.settings.lead_minutes)]
        record = {
            "service": key, "revisions": routed, "previous_min_scale": current, "min_scale": decision.min_scale,
            "window": window, "reason": reason, "applied": applied, "dry_run": policy.dry_run, "warmup": warmed,
            "forecast": ({"p_any_covered": round(p_any_in(covered), 4),
                          "upper_rps_max": round(max(m.upper for m in covered) / 60, 4)} if covered else None),
        }
        if released:
            record["released"] = released
        if policy.dry_run:
            # nothing was written: remember the decision clock only
            return record, ServiceState(now_s, current, state.raised_at_s if state else None)
        return record, ServiceState(now_s, decision.min_scale, decision.raised_at_s)

    def _release_unrouted(self, namespace: str, name: str, routed: list[str], targets: dict[str, dict],
                          ksvc: dict, legacy: bool) -> list[str]:
        """A Revision that left traffic (rolled out, or tagged at 0%) gives back what we set on
        it: a tag keeps it reachable, so a min-scale left there would keep pods warm for nothing.
        It gets the Service template's own values back (or none)."""
        template = (((ksvc.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("annotations") or {}
        released = []
        for revision, target in sorted(targets.items()):
            meta = target["metadata"]
            if revision in routed or MANAGED not in (meta.get("annotations") or {}):
                continue
            if (meta.get("labels") or {}).get("serving.knative.dev/service") != name:
                continue
            self.api.patch_annotations(namespace, revision, {MIN_SCALE: template.get(MIN_SCALE),
                                                             WINDOW: template.get(WINDOW), MANAGED: None},
                                       meta.get("resourceVersion"), legacy)
            released.append(revision)
        return released

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


def _uid(ksvc: dict) -> str:
    meta = ksvc["metadata"]
    return meta.get("uid") or f"{meta['namespace']}/{meta['name']}"


def _window_value(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return f"{seconds:g}s"
