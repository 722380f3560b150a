"""One forecast event in -> min-scale (and window) decided for every opted-in service it names,
applied on the routed Revisions where it changes -> one decision event out.

Safety rules, in the order they bite: only Services carrying the opt-in label are looked at;
an annotation that does not parse skips the service; a forecast older than the last one applied
is out of order and ignored; no forecast, a `no-data` entry, or an event too old to trust holds
the current min-scale (min_scale_policy.decide never lowers on those); a Revision is written
only when what it carries differs from the decision; `spec` is never written.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone

import redis
from cloudevents.core.v1.event import CloudEvent

from . import events, json_log
from .annotations import BadAnnotation, ServicePolicy, service_policy
from .knative_api import ApiSkip, ApiTransient, KnativeApi
from .min_scale_policy import decide, p_any_in
from .settings import ScaleSettings
from .state_store import RevisionState, ServiceState, StateStore
from .warmup import WarmUp

log = logging.getLogger("scale.scaler")
MIN_SCALE = "autoscaling.knative.dev/min-scale"
WINDOW = "autoscaling.knative.dev/window"


@dataclass
class Outcome:
    status: int
    reply: CloudEvent | None = None
    body: dict = field(default_factory=dict)


class Scaler:
    def __init__(self, settings: ScaleSettings, api: KnativeApi | None = None, client: redis.Redis | None = None):
        self.settings = settings
        self.api = api or KnativeApi(settings.api_url, settings.api_retries)
        self.store = StateStore(client or redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=2),
                                settings.dedupe_ttl_s, settings.decision_history)
        self.warmup = WarmUp(settings.warmup_path, settings.warmup_timeout_s, settings.warmup_gateway)
        self._legacy: bool | None = {"1.21": False, "1.20": True}.get(settings.knative_version)

    def handle(self, event: CloudEvent) -> Outcome:
        started = time.perf_counter()
        calls_before = self.api.calls
        fields = {"ce_id": event.get_id(), "ce_source": event.get_source(), "ce_type": event.get_type()}
        try:
            forecast = events.parse_forecast(event)
            if self.store.seen(event.get_source(), event.get_id()):
                json_log.event(log, "duplicate event: already applied", **fields, outcome="duplicate")
                return Outcome(202, body={"duplicate": True})
            data, transient = self._apply(forecast)
            if transient:
                raise events.RetryLater("; ".join(sorted(set(transient)))[:500])
            self.store.mark_seen(event.get_source(), event.get_id())
        except events.BadEvent as exc:
            json_log.event(log, "rejected event", logging.WARNING, **fields, outcome="rejected", reason=str(exc))
            return Outcome(400, body={"error": str(exc)})
        except (redis.RedisError, events.RetryLater, ApiTransient) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            json_log.event(log, "retry later", logging.ERROR, **fields, outcome="retry", reason=reason)
            return Outcome(503, body={"error": reason})
        changed = [d for d in data["decisions"] if d["applied"]]
        json_log.event(log, "decided", **fields, outcome="decided", tick=data["tick"],
                       services=len(data["decisions"]), applied=len(changed), skipped=len(data["skipped"]),
                       api_calls=self.api.calls - calls_before, seconds=round(time.perf_counter() - started, 3))
        return Outcome(200, reply=events.decision_event(self.settings.event_source, event, forecast.tick, data))

    # -- the decision ----------------------------------------------------------------------
    def _apply(self, forecast: events.ForecastTick) -> tuple[dict, list[str]]:
        now_s = forecast.tick.timestamp()
        age = datetime.now(timezone.utc).timestamp() - now_s
        too_old = self.settings.max_forecast_age_s > 0 and age > self.settings.max_forecast_age_s
        try:
            legacy = self._path()
        except ApiSkip as exc:
            skipped = [{"service": e.key, "reason": f"cannot tell the Knative version, untouched: {exc}"}
                       for e in forecast.services]
            return {"tick": forecast.tick.strftime("%Y-%m-%dT%H:%M:%SZ"), "forecast_model": forecast.model_version,
                    "actuation": None, "decisions": [], "skipped": skipped}, []
        by_namespace: dict[str, dict[str, events.ServiceForecast]] = defaultdict(dict)
        for entry in forecast.services:
            by_namespace[entry.namespace][entry.name] = entry
        decisions: list[dict] = []
        skipped: list[dict] = []
        transient: list[str] = []
        states_out: dict[str, ServiceState] = {}
        for namespace, entries in sorted(by_namespace.items()):
            try:
                ksvcs = {s["metadata"]["name"]: s for s in self.api.list_services(namespace, self.settings.opt_in_label)}
            except ApiSkip as exc:
                skipped += [{"service": f"{namespace}/{n}", "reason": f"cannot list services: {exc}"} for n in entries]
                continue
            for name in sorted(set(entries) - set(ksvcs)):
                skipped.append({"service": f"{namespace}/{name}",
                                "reason": "not opted in (label {}={}) or not found: untouched".format(*self.settings.opt_in_label)})
            keys = [f"{namespace}/{n}" for n in ksvcs]
            states = self.store.load(keys)
            for name, ksvc in sorted(ksvcs.items()):
                key = f"{namespace}/{name}"
                entry = entries.get(name)
                try:
                    policy = service_policy(ksvc, self.settings.policy, self.settings.dry_run)
                except BadAnnotation as exc:
                    skipped.append({"service": key, "reason": f"bad annotation, untouched: {exc}"})
                    continue
                state = states.get(key)
                if state is not None and state.tick_s > now_s:
                    skipped.append({"service": key, "reason": "out of order: a newer forecast was already applied"})
                    json_log.event(log, "out-of-order forecast ignored", logging.WARNING, service=key,
                                   tick=forecast.tick.isoformat(), applied_tick=state.tick_s)
                    continue
                try:
                    decision, new_state = self._service(key, ksvc, entry, policy, state, now_s, not too_old, legacy, age)
                except ApiSkip as exc:
                    skipped.append({"service": key, "reason": f"API refused, skipped: {exc}"})
                    json_log.event(log, "service skipped", logging.WARNING, service=key, reason=str(exc))
                    continue
                except ApiTransient as exc:
                    transient.append(str(exc))
                    skipped.append({"service": key, "reason": f"API unavailable, will retry: {exc}"})
                    continue
                decisions.append(decision)
                states_out[key] = new_state
        data = {"tick": forecast.tick.strftime("%Y-%m-%dT%H:%M:%SZ"), "forecast_model": forecast.model_version,
                "actuation": "podautoscaler" if legacy else "revision", "decisions": decisions, "skipped": skipped}
        self.store.save(states_out, [{"tick": data["tick"], **d} for d in decisions])
        return data, transient

    def _service(self, key: str, ksvc: dict, entry: events.ServiceForecast | None, policy: ServicePolicy,
                 state: ServiceState | None, now_s: float, event_fresh: bool, legacy: bool,
                 age_s: float) -> tuple[dict, ServiceState]:
        namespace = ksvc["metadata"]["namespace"]
        routed = [t["revisionName"] for t in (ksvc.get("status") or {}).get("traffic") or []
                  if t.get("percent", 0) > 0 and t.get("revisionName")]
        if not routed:
            raise ApiSkip(0, "no Revision is routed yet (status.traffic is empty)")
        known = dict(state.revisions) if state else {}
        for revision in routed:
            if revision not in known:  # first sight (or a rollout): read what it carries
                target = self.api.get_target(namespace, revision, legacy)
                annotations = target["metadata"].get("annotations") or {}
                known[revision] = RevisionState(annotations.get(MIN_SCALE), annotations.get(WINDOW),
                                                target["metadata"].get("resourceVersion"))
        if state is not None:
            current = state.min_scale
        else:
            current = max((int(known[r].min_scale) for r in routed if (known[r].min_scale or "").isdigit()), default=0)
        minutes = entry.minutes if entry is not None else None
        fresh = event_fresh and minutes is not None
        decision = decide(minutes, policy.settings, current, now_s, state.raised_at_s if state else None, fresh)
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
        applied = False
        revisions_out: dict[str, RevisionState] = {}
        for revision in routed:
            have = known[revision]
            patch = {k: v for k, v in desired.items()
                     if v != (have.min_scale if k == MIN_SCALE else have.window)}
            if patch and not policy.dry_run:
                result = self.api.patch_annotations(namespace, revision, patch, have.resource_version, legacy)
                annotations = result["metadata"].get("annotations") or {}
                have = RevisionState(annotations.get(MIN_SCALE), annotations.get(WINDOW),
                                     result["metadata"].get("resourceVersion"))
                applied = True
            revisions_out[revision] = have
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
        if policy.dry_run:
            # nothing was written: remember the decision clock, not a min-scale the cluster lacks
            new_state = ServiceState(now_s, current if state is None else state.min_scale,
                                     state.raised_at_s if state else None, {r: known[r] for r in routed})
        else:
            new_state = ServiceState(now_s, decision.min_scale, decision.raised_at_s, revisions_out)
        return record, new_state

    def _path(self) -> bool:
        """True for the <= 1.20 path (patch PodAutoscalers), decided once per process."""
        if self._legacy is None:
            major, minor = self.api.knative_version()
            self._legacy = (major, minor) < (1, 21)
            json_log.event(log, "knative version detected", version=f"{major}.{minor}",
                           actuation="podautoscaler" if self._legacy else "revision")
        return self._legacy


def _window_value(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return f"{seconds:g}s"
