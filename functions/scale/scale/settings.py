"""Configuration of the scale function: environment variables, read once in `start()`.

| variable | default | meaning |
|---|---|---|
| REDIS_URL | redis://redis:6379/0 | dedupe keys, per-service state, decisions |
| REDIS_PASSWORD | (none) | Redis password (from the Secret `redis-auth` in the cluster install) |
| MANAGED_NAMESPACES | models | comma-separated namespaces this function may scale (its RoleBindings exist there); `*`: any |
| ACCEPTED_SOURCES | /predictive-scaling/forecast | comma-separated event sources accepted (the forecast function's); `*`: any |
| MAX_AHEAD_SECONDS | 60 | a forecast whose tick is further ahead of this clock is refused (400) |
| STATE_TTL_SECONDS | 604800 | per-service state and decision logs expire this long after their last write |
| KUBERNETES_API_URL | (in-cluster) | API server URL; set for local mode (the API double) |
| KNATIVE_VERSION | auto | `auto` (label of the knative-serving namespace), `1.21` (patch Revisions) or `1.20` (patch PodAutoscalers) |
| OPT_IN_LABEL | predictive-scaling.io/enabled=true | only Knative Services with this label are touched |
| DRY_RUN | false | decide and report, patch nothing (per service: annotation) |
| MAX_FORECAST_AGE_SECONDS | 180 | older forecast events only hold (0: never by age, for replayed clocks) |
| (policy knobs) | | POD_CAPACITY_RPS, COLD_START_COST_POD_SECONDS, MAX_SCALE, COOLDOWN_SECONDS, IDLE_WINDOW, BUSY_WINDOW, BURST_RISK: the one table in policy_knobs.py |
| FALLBACK_MIN_BRIER_SKILL | 0 | a service whose forecast's rolling Brier skill (sent with the forecast) is below this is scaled by a keep-alive instead (fallback.py); `off`: never |
| FALLBACK_MIN_MINUTES | 30 | scored minutes the skill needs before it may send a service to the keep-alive |
| KEEPALIVE_MINUTES | 10 | the fallback's keep-alive: min-scale 1 while a request came in this many observed minutes |
| WARMUP | true | send one request when raising a service from 0 |
| WARMUP_PATH | / | path of that request |
| WARMUP_GATEWAY | (none) | send it to this ingress URL with the Service's host as `Host:` |
| WARMUP_TIMEOUT_SECONDS | 2 | the request is fire-and-forget: it only has to reach the activator |
| API_RETRIES | 4 | retries on 409 (re-read first) and 5xx, with exponential backoff |
| API_READS | watch | `watch`: list each namespace once, then keep a watch-fed cache (kube_cache.py); `list`: a fresh paged list every event |
| API_PAGE_SIZE | 500 | objects per list page (`limit`; client-go's pager uses 500) |
| API_RELIST_SECONDS | 600 | the watch cache lists again this often (a missed event is corrected by the next list) |
| API_WATCH_TIMEOUT_SECONDS | 300 | one watch request lasts at most this long, then is re-opened from its resourceVersion |
| API_WRITERS | 8 | patches in flight at once (a bounded pool: one event raising 10,000 services) |
| (model pool) | | PLACEMENT_EVERY_MINUTES, PLACEMENT_HOLD_MINUTES, PLACEMENT_DEDICATE_SHARE, PLACEMENT_POOL_SHARE, POOL_MODELS_PER_POD, PRELOAD_TIMEOUT_SECONDS, PRELOAD_GATEWAY: pool_settings.py |
| DEDUPE_TTL_SECONDS | 3600 | how long an event id is remembered |
| DECISION_HISTORY | 60 | decisions kept per service in Redis (the log expires with the state) |
| EVENT_SOURCE | /predictive-scaling/scale | source attribute of the reply |
| METRICS_PORT | (none: not served) | port of the Prometheus metrics endpoint `/metrics` (func.yaml sets 9464; read by the shim, metrics.py) |
| METRICS_ADDRESS | 0.0.0.0 | address the metrics endpoint binds |
| METRICS_MAX_SERVICES | 1000 | services with a `scale_min_scale` series (those above 0 first); `scale_warm_pods` sums them all |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from fncommon.env_settings import SettingsError, flag, names, number, optional, text, whole

from .fallback import FallbackSettings
from .min_scale_policy import PolicySettings
from .policy_knobs import defaults_from_env
from .pool_settings import PoolSettings


@dataclass(frozen=True)
class ScaleSettings:
    redis_url: str
    api_url: str | None
    knative_version: str
    opt_in_label: tuple[str, str]
    dry_run: bool
    max_forecast_age_s: float
    policy: PolicySettings
    warmup: bool
    warmup_path: str
    warmup_gateway: str | None
    warmup_timeout_s: float
    pool: PoolSettings
    """The model pool's placement (namespaces without a pool Service never use it)."""
    api_retries: int
    dedupe_ttl_s: int
    decision_history: int
    event_source: str
    redis_password: str | None
    managed_namespaces: tuple[str, ...]
    accepted_sources: tuple[str, ...]
    max_ahead_s: float
    state_ttl_s: int
    metrics_max_services: int = 1000
    api_reads: str = "watch"
    api_page_size: int = 500
    api_relist_s: float = 600.0
    api_watch_timeout_s: float = 300.0
    api_writers: int = 8
    fallback: FallbackSettings = FallbackSettings()
    """When a service's forecast has no measured skill: the keep-alive (fallback.py)."""

    def manages(self, namespace: str) -> bool:
        return "*" in self.managed_namespaces or namespace in self.managed_namespaces

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "ScaleSettings":
        label = text(env, "OPT_IN_LABEL", "predictive-scaling.io/enabled=true")
        if "=" not in label:
            raise SettingsError(f"OPT_IN_LABEL={label!r} must be key=value")
        key, value = label.split("=", 1)
        reads = text(env, "API_READS", "watch")
        if reads not in ("watch", "list"):
            raise SettingsError(f"API_READS={reads!r} must be watch or list")
        version = text(env, "KNATIVE_VERSION", "auto")
        if version not in ("auto", "1.21", "1.20"):
            raise SettingsError(f"KNATIVE_VERSION={version!r} must be auto, 1.21 or 1.20")
        try:
            policy = defaults_from_env(env)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
        return cls(
            redis_url=text(env, "REDIS_URL", "redis://redis:6379/0"),
            api_url=optional(env, "KUBERNETES_API_URL"),
            knative_version=version,
            opt_in_label=(key, value),
            dry_run=flag(env, "DRY_RUN", False),
            max_forecast_age_s=number(env, "MAX_FORECAST_AGE_SECONDS", 180.0, 0.0),
            policy=policy,
            warmup=flag(env, "WARMUP", True),
            warmup_path=text(env, "WARMUP_PATH", "/"),
            warmup_gateway=optional(env, "WARMUP_GATEWAY"),
            warmup_timeout_s=number(env, "WARMUP_TIMEOUT_SECONDS", 2.0, 0.1),
            pool=PoolSettings.from_env(env, optional(env, "WARMUP_GATEWAY")),
            api_retries=whole(env, "API_RETRIES", 4, 0),
            dedupe_ttl_s=whole(env, "DEDUPE_TTL_SECONDS", 3600, 1),
            decision_history=whole(env, "DECISION_HISTORY", 60, 1),
            event_source=text(env, "EVENT_SOURCE", "/predictive-scaling/scale"),
            redis_password=optional(env, "REDIS_PASSWORD"),
            managed_namespaces=names(env, "MANAGED_NAMESPACES", "models"),
            accepted_sources=names(env, "ACCEPTED_SOURCES", "/predictive-scaling/forecast"),
            max_ahead_s=number(env, "MAX_AHEAD_SECONDS", 60.0, 0.0),
            state_ttl_s=whole(env, "STATE_TTL_SECONDS", 7 * 86400, 60),
            metrics_max_services=whole(env, "METRICS_MAX_SERVICES", 1000, 0),
            api_reads=reads,
            api_page_size=whole(env, "API_PAGE_SIZE", 500, 1),
            api_relist_s=number(env, "API_RELIST_SECONDS", 600.0, 1.0),
            api_watch_timeout_s=number(env, "API_WATCH_TIMEOUT_SECONDS", 300.0, 1.0),
            api_writers=whole(env, "API_WRITERS", 8, 1),
            fallback=_fallback(env),
        )


def _fallback(env: Mapping[str, str]) -> FallbackSettings:
    raw = text(env, "FALLBACK_MIN_BRIER_SKILL", "0")
    if raw.strip().lower() == "off":
        threshold = None
    else:
        try:
            threshold = float(raw)
        except ValueError:
            raise SettingsError(f"FALLBACK_MIN_BRIER_SKILL={raw!r} must be a number <= 1, or off") from None
        if not threshold <= 1.0:  # NaN fails too
            raise SettingsError(f"FALLBACK_MIN_BRIER_SKILL={raw!r} must be a number <= 1, or off")
    return FallbackSettings(threshold, whole(env, "FALLBACK_MIN_MINUTES", 30, 1), whole(env, "KEEPALIVE_MINUTES", 10, 1))
