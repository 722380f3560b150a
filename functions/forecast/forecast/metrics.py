"""Prometheus metrics of the forecast function, and the port they are served on.

func-python's CloudEvents middleware reads every request other than /health/* as a CloudEvent
(a GET /metrics is answered 400 before the function sees it), so the metrics have a port of their
own: METRICS_PORT (func.yaml sets 9464; unset or 0: not served, as in tests that do not ask).
That also keeps scrapes off the port the Broker delivers to and out of queue-proxy's request
counts. Names follow Prometheus' conventions: base units in the name, `_total` counters.

Label cardinality is bounded: per-service series (the next-minute forecast and its online
quality) exist for at most METRICS_MAX_SERVICES services (default 500), those with the highest
upper-quantile forecast this tick (ties by name); the others count in the fleet-wide figures only,
and `forecast_metrics_services_omitted` says how many they are. Reason labels are classes from
a fixed list, never free text.
"""

from __future__ import annotations

import re
import time
from contextlib import contextmanager
from typing import Iterator

from prometheus_client import Counter, Gauge, Histogram, Info

from .quality import OnlineQuality

DEFAULT_MAX_SERVICES = 500

TICK_SECONDS = Histogram(
    "forecast_tick_duration_seconds", "Time to handle one ping: history read, every service forecast, reply built.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300))
TICKS = Counter("forecast_ticks_total", "Pings handled, by outcome (forecast, duplicate, rejected, retry).", ["outcome"])
SERVICES = Counter(
    "forecast_services_total",
    "Services in forecast events: status ok (forecast) or held (no-data), with the reason class of a hold.",
    ["status", "reason"])
SERVICES_LAST = Gauge("forecast_tick_services", "Services in the last forecast event, by status and reason class.",
                      ["status", "reason"])
QUERY_SECONDS = Histogram(
    "forecast_prometheus_query_duration_seconds", "Prometheus HTTP API calls, by endpoint (query_range, query).",
    ["endpoint"], buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
QUERY_FAILURES = Counter(
    "forecast_prometheus_query_failures_total",
    "Prometheus calls that failed (unreachable, timed out, an error answer), by endpoint.", ["endpoint"])
MODEL = Info("forecast_model", "The forecaster in use: version, sha256, quantile, horizon.")
POINT = Gauge("forecast_next_minute_point_requests_per_second",
              "Point forecast of the next minute's request rate.", ["namespace", "service"])
UPPER = Gauge("forecast_next_minute_upper_requests_per_second",
              "Upper-quantile forecast of the next minute's request rate.", ["namespace", "service"])
P_ANY = Gauge("forecast_next_minute_p_any", "Forecast probability of any request in the next minute.",
              ["namespace", "service"])
MAE = Gauge("forecast_quality_mae_requests_per_second",
            "Rolling mean absolute error of the next-minute point forecast against what Prometheus then saw.",
            ["namespace", "service"])
BRIER = Gauge("forecast_quality_brier_score",
              "Rolling Brier score of the next-minute P(any request) against what Prometheus then saw.",
              ["namespace", "service"])
MASE = Gauge("forecast_quality_mase",
             "Rolling MAE of the next-minute point forecast over the seasonal naive's (same minute yesterday or the "
             "last 5 minutes) on the same minutes: below 1 the forecast helps this service.", ["namespace", "service"])
BRIER_SKILL = Gauge("forecast_quality_brier_skill",
                    "Rolling Brier skill of next-minute P(any) against the service's own base rate: 1 - Brier / "
                    "the base rate's Brier; above 0 the forecast helps, below 0 it is worse than the base rate.",
                    ["namespace", "service"])
SCORED = Gauge("forecast_quality_scored_minutes", "Minutes in the rolling quality window of a service.",
               ["namespace", "service"])
FLEET_MAE = Gauge("forecast_quality_fleet_mae_requests_per_second",
                  "Rolling MAE of the next-minute point forecast over every service and scored minute.")
FLEET_BRIER = Gauge("forecast_quality_fleet_brier_score",
                    "Rolling Brier score of next-minute P(any) over every service and scored minute.")
FLEET_MASE = Gauge("forecast_quality_fleet_mase",
                   "Rolling MASE (MAE over the seasonal naive's) over every service and scored minute.")
FLEET_BRIER_SKILL = Gauge("forecast_quality_fleet_brier_skill",
                          "Rolling Brier skill of P(any) against each service's own base rate, over the fleet.")
FLEET_SCORED = Gauge("forecast_quality_fleet_scored_minutes", "Service-minutes in the fleet's rolling quality window.")
QUALITY_SCORED = Counter("forecast_quality_scored_total", "Service-minutes scored against what Prometheus saw.")
OMITTED = Gauge("forecast_metrics_services_omitted",
                "Services forecast but without per-service series (over METRICS_MAX_SERVICES).")

# Reason classes of a hold (the reason texts are tick.py's); the first pattern that matches wins.
_HOLD_CLASSES = (
    ("prometheus_unavailable", re.compile(r"^prometheus unavailable")),
    ("backfill_pending", re.compile(r"^back-fill pending")),
    ("stale", re.compile(r"^stale")),
    ("no_model", re.compile(r"forecaster|manifest|model|sha256", re.I)),
)


def hold_class(reason: str) -> str:
    return next((name for name, pattern in _HOLD_CLASSES if pattern.search(reason or "")), "other")


@contextmanager
def prometheus_call(endpoint: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    except BaseException:
        QUERY_FAILURES.labels(endpoint).inc()
        raise
    finally:
        QUERY_SECONDS.labels(endpoint).observe(time.perf_counter() - started)


class TickMetrics:
    """What one tick records: the services forecast and held, the model, the next-minute
    forecasts and the online quality (bounded per-service series, see the module docstring)."""

    def __init__(self, limit: int = DEFAULT_MAX_SERVICES, window_minutes: int = 60):
        self.limit = limit
        self.quality = OnlineQuality(window_minutes)
        self._exported: set[tuple[str, str]] = set()
        self._model: dict | None = None

    def tick(self, outcome: str, seconds: float | None = None) -> None:
        TICKS.labels(outcome).inc()
        if seconds is not None:
            TICK_SECONDS.observe(seconds)

    def model(self, model: dict) -> None:
        labels = {k: str(model.get(k, "")) for k in ("version", "sha256", "quantile", "horizon_minutes")}
        if labels != self._model:
            MODEL.info(labels)
            self._model = labels

    def services(self, entries: list[dict]) -> None:
        counts: dict[tuple[str, str], int] = {}
        for entry in entries:
            key = ("ok", "") if entry["status"] == "ok" else ("held", hold_class(entry.get("reason", "")))
            counts[key] = counts.get(key, 0) + 1
        SERVICES_LAST.clear()
        for (status, reason), n in counts.items():
            SERVICES.labels(status, reason).inc(n)
            SERVICES_LAST.labels(status, reason).set(n)

    def forecasts(self, names: list[str], point_rps, upper_rps, p_any, quality_figures_scale: float,
                  per_service: dict | None = None) -> None:
        """Next-minute gauges for the exported services, then the quality gauges (MAE in
        requests per minute divided by `quality_figures_scale`, the minute's seconds), from
        `per_service` (quality.per_service(), when the caller has it already)."""
        order = sorted(range(len(names)), key=lambda i: (-float(upper_rps[i]), names[i]))[: self.limit]
        exported = {_labels(names[i]) for i in order}
        for gauge in (POINT, UPPER, P_ANY, MAE, BRIER, SCORED, MASE, BRIER_SKILL):
            for labels in self._exported - exported:
                try:
                    gauge.remove(*labels)
                except KeyError:
                    pass
        for i in order:
            namespace, service = names[i].split("/", 1)
            POINT.labels(namespace, service).set(float(point_rps[i]))
            UPPER.labels(namespace, service).set(float(upper_rps[i]))
            P_ANY.labels(namespace, service).set(float(p_any[i]))
        OMITTED.set(len(names) - len(order))
        self._exported = exported
        for name, figures in (self.quality.per_service() if per_service is None else per_service).items():
            labels = _labels(name)
            if labels in exported:
                MAE.labels(*labels).set(figures.mae / quality_figures_scale)
                BRIER.labels(*labels).set(figures.brier)
                SCORED.labels(*labels).set(figures.minutes)
                MASE.labels(*labels).set(figures.mase)  # NaN where the naive is perfect
                BRIER_SKILL.labels(*labels).set(figures.brier_skill)
        fleet = self.quality.fleet()
        if fleet is not None:
            FLEET_MAE.set(fleet.mae / quality_figures_scale)
            FLEET_BRIER.set(fleet.brier)
            FLEET_SCORED.set(fleet.minutes)
            FLEET_MASE.set(fleet.mase)
            FLEET_BRIER_SKILL.set(fleet.brier_skill)

    def scored(self, n: int) -> None:
        if n:
            QUALITY_SCORED.inc(n)


def _labels(name: str) -> tuple[str, str]:
    """The (namespace, service) labels of a "namespace/service" name."""
    namespace, _, service = name.partition("/")
    return namespace, service
