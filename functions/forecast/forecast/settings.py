"""Configuration of the forecast function: environment variables, read once in `start()`.

| variable | default | meaning |
|---|---|---|
| PROMETHEUS_URL | http://prometheus.monitoring.svc:9090 | Prometheus HTTP API base URL |
| METRICS_PRESET | knative-1.21 | which request counter to read (metric_presets.PRESETS) |
| PROMQL | (preset) | free-form override: per-minute request counts, `{window}` and `{selector}` placeholders |
| SERVICE_LABEL / NAMESPACE_LABEL | (preset) | result labels naming the Knative Service and namespace |
| SERVICE_SELECTOR | "" | extra label matchers, e.g. `namespace="models"` |
| HEARTBEAT_SELECTOR | (preset) | matchers of the scrape job(s) whose successful scrapes (`up == 1`) make a minute observed, `;` between jobs all needed; e.g. `job="queue-proxy"` |
| REDIS_URL | redis://redis:6379/0 | dedupe keys, history cache, forecasts |
| REDIS_PASSWORD | (none) | Redis password (from the Secret `redis-auth` in the cluster install) |
| FORECASTER_ROOT | models/forecaster | directory with manifest.json and the artifacts it names; a relative path is under this package's own directory (`forecast/`), wherever the builder put it (see `package_relative`) |
| HISTORY_MINUTES | 10080 | per-service minute history kept (one week: the features look a week back) |
| TOPUP_MINUTES | 5 | minutes re-read every tick (late scrapes correct the recent past) |
| FILL_CHUNK_MINUTES | 1440 | largest range of one query when a service is first seen (Prometheus' sample limit) |
| FILL_MAX_POINTS | 1000000 | samples one back-fill answer may hold: chunks shrink as the fleet grows, which bounds the function's peak memory (each answer in flight costs ~100 bytes a sample while it is decoded) |
| FILL_CONCURRENCY | 2 | back-fill queries in flight at once (Prometheus evaluates one while the function decodes another); peak memory grows with it |
| PREDICT_THREADS | 1 | threads of the forecaster's trees per tick; OpenMP's default is one per core of the node (not of the pod's CPU limit), and threads spinning on cores they do not have made a 10,000-service tick 2-3x slower than one thread |
| INGEST_LAG_SECONDS | 0 | the minute ending this close to the tick is not read yet |
| STALE_AFTER_MINUTES | 5 | a service whose last data is older than this gets no forecast |
| DEDUPE_TTL_SECONDS | 3600 | how long an event id is remembered |
| FORECAST_HISTORY | 60 | forecasts kept per service in Redis for the report (the log expires a day after its last write) |
| PROMETHEUS_TIMEOUT_SECONDS | 10 | per query |
| MINUTE_SECONDS | 60 | length of a forecast minute; shorter only for the accelerated local demo |
| EVENT_SOURCE | /predictive-scaling/forecast | source attribute of the reply |
| ACCEPTED_SOURCES | /apis/v1/namespaces/predictive-scaling/pingsources/every-minute | comma-separated event sources accepted (the PingSource of eventing/); `*`: any |
| MAX_AHEAD_SECONDS | 60 | a ping dated further ahead of this clock is refused (400) |
| CLAIM_TTL_SECONDS | 600 | how long a delivery being handled blocks a second delivery of it (503, retried) |
| FORECASTER_SHA256 | (none) | the forecaster's sha256, pinned where the artifact cannot change it; when set, a manifest naming another digest is refused |
| METRICS_PORT | (none: not served) | port of the Prometheus metrics endpoint `/metrics` (func.yaml sets 9464; read by the shim, metrics.py) |
| METRICS_ADDRESS | 0.0.0.0 | address the metrics endpoint binds |
| METRICS_MAX_SERVICES | 500 | services with per-service metric series (the highest forecast first); the rest count fleet-wide only |
| QUALITY_WINDOW_MINUTES | 60 | minutes of the rolling online forecast quality (MAE, Brier score) |
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from fncommon.env_settings import SettingsError, names, optional, sha256, text, whole

from .metric_presets import PRESETS, MetricQuery


@dataclass(frozen=True)
class ForecastSettings:
    prometheus_url: str
    query: MetricQuery
    redis_url: str
    forecaster_root: str
    history_minutes: int
    topup_minutes: int
    fill_chunk_minutes: int
    fill_max_points: int
    ingest_lag_s: int
    stale_after_minutes: int
    dedupe_ttl_s: int
    forecast_history: int
    prometheus_timeout_s: float
    event_source: str
    minute_s: int
    accepted_sources: tuple[str, ...]
    max_ahead_s: float
    claim_ttl_s: int
    forecaster_sha256: str | None
    redis_password: str | None
    metrics_max_services: int = 500
    quality_window_minutes: int = 60
    fill_concurrency: int = 2
    predict_threads: int = 1

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "ForecastSettings":
        preset_name = env.get("METRICS_PRESET", "knative-1.21")
        if preset_name not in PRESETS:
            raise SettingsError(f"METRICS_PRESET={preset_name!r} is not one of {sorted(PRESETS)}")
        preset = PRESETS[preset_name]
        query = MetricQuery(
            name=preset_name if "PROMQL" not in env else "custom",
            promql=env.get("PROMQL", preset.promql),
            service_label=env.get("SERVICE_LABEL", preset.service_label),
            namespace_label=env.get("NAMESPACE_LABEL", preset.namespace_label),
            selector=env.get("SERVICE_SELECTOR", ""),
            heartbeat=env.get("HEARTBEAT_SELECTOR", preset.heartbeat),
        )
        if "{window}" not in query.promql:
            raise SettingsError("PROMQL must contain {window} (the counting window, one minute)")
        settings = cls(
            prometheus_url=env.get("PROMETHEUS_URL", "http://prometheus.monitoring.svc:9090").rstrip("/"),
            query=query,
            redis_url=text(env, "REDIS_URL", "redis://redis:6379/0"),
            forecaster_root=package_relative(text(env, "FORECASTER_ROOT", "models/forecaster")),
            history_minutes=whole(env, "HISTORY_MINUTES", 10080, 60),
            topup_minutes=whole(env, "TOPUP_MINUTES", 5, 1),
            fill_chunk_minutes=whole(env, "FILL_CHUNK_MINUTES", 1440, 10),
            fill_max_points=whole(env, "FILL_MAX_POINTS", 1_000_000, 10_000),
            fill_concurrency=whole(env, "FILL_CONCURRENCY", 2, 1),
            predict_threads=whole(env, "PREDICT_THREADS", 1, 1),
            ingest_lag_s=whole(env, "INGEST_LAG_SECONDS", 0, 0),
            stale_after_minutes=whole(env, "STALE_AFTER_MINUTES", 5, 1),
            dedupe_ttl_s=whole(env, "DEDUPE_TTL_SECONDS", 3600, 1),
            forecast_history=whole(env, "FORECAST_HISTORY", 60, 1),
            prometheus_timeout_s=float(whole(env, "PROMETHEUS_TIMEOUT_SECONDS", 10, 1)),
            event_source=text(env, "EVENT_SOURCE", "/predictive-scaling/forecast"),
            minute_s=whole(env, "MINUTE_SECONDS", 60, 1),
            accepted_sources=names(env, "ACCEPTED_SOURCES", "/apis/v1/namespaces/predictive-scaling/pingsources/every-minute"),
            max_ahead_s=float(whole(env, "MAX_AHEAD_SECONDS", 60, 0)),
            claim_ttl_s=whole(env, "CLAIM_TTL_SECONDS", 600, 1),
            forecaster_sha256=sha256(env, "FORECASTER_SHA256"),
            redis_password=optional(env, "REDIS_PASSWORD"),
            metrics_max_services=whole(env, "METRICS_MAX_SERVICES", 500, 0),
            quality_window_minutes=whole(env, "QUALITY_WINDOW_MINUTES", 60, 1),
        )
        return settings


PACKAGE_DIR = Path(__file__).resolve().parent


def package_relative(path: str) -> str:
    """An absolute path as given; a relative one under this package's directory. Why: the working
    directory and the function's place differ per builder (func's pack builder moves the code to
    /workspace/fn and installs it editable; the host builder pip-installs the wheel under
    /func/.func/build/lib; `func run` runs from the source), but in each the artifact shipped inside
    the `forecast` package sits beside this file (the wheel carries it: pyproject's hatch
    `artifacts`)."""
    candidate = Path(path)
    return str(candidate if candidate.is_absolute() else PACKAGE_DIR / candidate)

