"""Prometheus metrics of the scale function, and the port they are served on.

func-python's CloudEvents middleware reads every request other than /health/* as a CloudEvent
(a GET /metrics is answered 400 before the function sees it), so the metrics have a port of their
own: METRICS_PORT (func.yaml sets 9464; unset or 0: not served). Names follow Prometheus'
conventions: base units in the name, `_total` counters.

Label cardinality is bounded: reasons are classes from fixed lists (never the free-text reason
of the decision event), verbs and codes are the API's; the per-service `scale_min_scale` exists
for at most METRICS_MAX_SERVICES services (default 1000), those with a min-scale above 0 first
(then by name), so a fleet of idle services cannot flood Prometheus; `scale_warm_pods` always
sums the whole fleet.
"""

from __future__ import annotations

import collections
import heapq
import re

from prometheus_client import Counter, Gauge, Histogram


DEFAULT_MAX_SERVICES = 1000

EVENTS = Counter("scale_events_total", "Forecast events handled, by outcome (decided, duplicate, rejected, retry).",
                 ["outcome"])
DECISIONS = Counter(
    "scale_decisions_total",
    "Per-service decisions, by outcome (raised, lowered, held, skipped) and reason class.", ["outcome", "reason"])
API_REQUESTS = Counter(
    "scale_kubernetes_api_requests_total",
    "Kubernetes API requests, by verb and HTTP status code (`error`: no answer, connection failed).",
    ["verb", "code"])
API_FAILURES = Counter(
    "scale_kubernetes_api_failures_total",
    "Kubernetes API requests that failed (status >= 400 or no answer), by verb and code.", ["verb", "code"])
API_SECONDS = Histogram("scale_kubernetes_api_request_duration_seconds", "Kubernetes API request time, by verb.",
                        ["verb"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
PREWARMS = Counter("scale_prewarms_from_zero_total",
                   "Services raised from min-scale 0 to 1 or more ahead of their forecast traffic.")
MIN_SCALE = Gauge("scale_min_scale", "min-scale this function holds on the Service's routed Revisions.",
                  ["namespace", "service"])
WARM_PODS = Gauge("scale_warm_pods", "Sum of min-scale over every service this function manages: the warm pods it pays for.")
OMITTED = Gauge("scale_metrics_services_omitted", "Managed services without a scale_min_scale series (over METRICS_MAX_SERVICES).")

# The model pool's placement: every move between tiers and every pre-load, by outcome, and the
# models on each tier. Labelled by namespace, not by model, so that a fleet of thousands of models
# does not become thousands of series; the decision event names the model of each move and pre-load.
MOVES = Counter("scale_placement_moves_total",
                "Model moves between the pool and a dedicated Service, by target tier and outcome "
                "(applied, waiting for the target to be ready, dry_run, failed)", ["namespace", "to", "outcome"])
PRELOADS = Counter("scale_placement_preloads_total",
                   "Model pre-loads into the pool, by outcome (loaded, failed, deferred while the pool has no "
                   "ready pod, dry_run)", ["namespace", "outcome"])
MODELS = Gauge("scale_placement_models", "Models routed to each tier, as last read", ["namespace", "tier"])
FALLBACKS = Counter("scale_placement_fallbacks_total",
                    "Models moved back to the pool because their dedicated Service could not serve (gone, or not "
                    "Ready beyond POOL_NOT_READY_SECONDS)", ["namespace"])
DELETION_HOLDS = Counter("scale_placement_deletion_holds_total",
                         "The finalizer that keeps a deleted dedicated Service serving until no route reaches it: "
                         "added, released, or conflict (retried on the next event)", ["namespace", "outcome"])
NOT_READY = Gauge("scale_placement_mappings_not_ready",
                  "DomainMappings not programmed for longer than POOL_NOT_READY_SECONDS: reported, no longer held "
                  "warm for", ["namespace"])
KEEP_ALIVE = Counter("scale_keep_alive_writes_total",
                     "scale-to-zero-pod-retention-period writes on a tier's routed Revisions, by what was written "
                     "(set: the plan's keep-alive; restored: the template's own value back)", ["namespace", "outcome"])

_BUDGET: Gauge | None = None

_DECISION_REASONS = (
    ("cooldown", re.compile(r"cool-down")),
    ("no_data", re.compile(r"forecast function had no data")),
    ("no_forecast", re.compile(r"no forecast")),
    ("stale", re.compile(r"stale|s old$")),
    ("forecast", re.compile(r"P\(any\)")),
)
_SKIP_REASONS = (
    ("not_opted_in", re.compile(r"^not opted in")),
    ("namespace_not_managed", re.compile(r"^namespace not managed")),
    ("bad_annotation", re.compile(r"^bad annotation")),
    ("out_of_order", re.compile(r"^out of order")),
    ("api_unavailable", re.compile(r"^API unavailable")),
    ("api_refused", re.compile(r"^API refused|^cannot list")),
    ("knative_version_unknown", re.compile(r"^cannot tell the Knative version")),
)


def _classify(reason: str, classes) -> str:
    return next((name for name, pattern in classes if pattern.search(reason or "")), "other")


def decision_outcome(record: dict) -> tuple[str, str]:
    """(outcome, reason class) of one decision record of the decision event."""
    previous, new = record["previous_min_scale"], record["min_scale"]
    outcome = "raised" if new > previous else "lowered" if new < previous else "held"
    return outcome, _classify(record.get("reason", ""), _DECISION_REASONS)


def skip_class(reason: str) -> str:
    return _classify(reason, _SKIP_REASONS)


def api_call(verb: str, code: int | str, seconds: float) -> None:
    code = str(code)
    API_REQUESTS.labels(verb, code).inc()
    API_SECONDS.labels(verb).observe(seconds)
    if not code.startswith("2"):
        API_FAILURES.labels(verb, code).inc()


def event(outcome: str) -> None:
    EVENTS.labels(outcome).inc()


def set_warm_pod_budget(pods: float | None) -> None:
    """For the fleet budget (placement): the pods the budget allows. The series exists only
    once a budget is set (`scale_warm_pod_budget_pods`), so absent means no budget."""
    global _BUDGET
    if pods is None:
        return
    if _BUDGET is None:
        _BUDGET = Gauge("scale_warm_pod_budget_pods", "The fleet's warm-pod budget in pods, when a budget is set.")
    _BUDGET.set(pods)


class DecisionMetrics:
    """What a decided event records: its decisions and skips, pre-warms, and the min-scale held
    per service (bounded, see the module docstring)."""

    def __init__(self, limit: int = DEFAULT_MAX_SERVICES):
        self.limit = limit
        self.held: dict[str, int] = {}
        self._exported: set[str] = set()

    def record(self, data: dict) -> None:
        """Counted per outcome first, then one increment per outcome: 10,000 decisions are a
        handful of counter updates (each takes the client library's lock), not 10,000."""
        outcomes: collections.Counter = collections.Counter()
        prewarms = 0
        for d in data["decisions"]:
            outcomes[decision_outcome(d)] += 1
            if d["applied"] and d["previous_min_scale"] == 0 and d["min_scale"] > 0:
                prewarms += 1
            self.held[d["service"]] = d["previous_min_scale"] if d["dry_run"] else d["min_scale"]
        for s in data["skipped"]:
            reason = skip_class(s["reason"])
            outcomes[("skipped", reason)] += 1
            if reason in ("not_opted_in", "namespace_not_managed"):
                self.held.pop(s["service"], None)  # no longer this function's to hold
        for labels, count in outcomes.items():
            DECISIONS.labels(*labels).inc(count)
        if prewarms:
            PREWARMS.inc(prewarms)
        self._export()

    def _export(self) -> None:
        ranked = sorted(heapq.nsmallest(self.limit, self.held, key=lambda k: (self.held[k] == 0, k)),
                        key=lambda k: (self.held[k] == 0, k))
        keep = set(ranked)
        for key in self._exported - keep:
            try:
                MIN_SCALE.remove(*key.split("/", 1))
            except KeyError:
                pass
        for key in ranked:
            MIN_SCALE.labels(*key.split("/", 1)).set(self.held[key])
        self._exported = keep
        WARM_PODS.set(sum(self.held.values()))
        OMITTED.set(len(self.held) - len(ranked))
