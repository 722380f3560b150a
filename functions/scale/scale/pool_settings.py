"""Settings of the model pool's placement (environment, read once with the scale function's)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from fncommon.env_settings import SettingsError, number, optional, whole


@dataclass(frozen=True)
class PoolSettings:
    """| variable | default | meaning |
    |---|---|---|
    | PLACEMENT_EVERY_MINUTES | 10 | placement runs on ticks whose minute is a multiple of this (the backtest's cadence) |
    | PLACEMENT_HOLD_MINUTES | 60 | how long the forecast must favour the other tier before a model moves |
    | PLACEMENT_DEDICATE_SHARE / PLACEMENT_POOL_SHARE | 0.7 / 0.35 | dedicate at this share of one pod's capacity, pool again below that one |
    | POOL_MODELS_PER_POD | 64 | at most this many models are pre-loaded (what a pool pod keeps within POOL_MEMORY_MB) |
    | PRELOAD_TIMEOUT_SECONDS | 2 | per call to the pool |
    | PRELOAD_GATEWAY | (none) | send pre-loads to this URL with the pool's host as `Host:` (local mode's stand-in, which routes them to a replica's control port); not WARMUP_GATEWAY: an ingress does not reach the control port |
    | POOL_CONTROL_URL | http://{name}-control.{namespace}.svc.cluster.local:8081 | the pool's control port (repository API), from the pool's name and namespace |
    | POOL_MODEL_MEMORY_MB | 4 | a model's memory in a pool pod when the pool Service has no `predictive-scaling.io/model-memory-mb`: its capacity in models is its POOL_MEMORY_MB over this |
    | POOL_MODEL_LOAD_MS | 50 | a model's load time in a pool pod when the pool Service has no `predictive-scaling.io/model-load-ms`: placement by memory counts the pool pods' time spent loading models with it (infer measures it: `infer_model_load_seconds`); the fleet backtest's default too |
    | POOL_WARMTH_EVERY_MINUTES | 1440 | the pool's warmth (forecast at a price, keep-alive, hybrid histogram, time of day) is chosen again on minutes that are a multiple of this |
    | POOL_HISTORY_MINUTES | 10080 | the minute history (observed requests, forecast P(any)) kept per model in Redis for that choice |
    | FLEET_BUDGET | (none) | spend this x per-model Knative's pod-seconds (estimated on the history) instead of the user's price |
    | POOL_NOT_READY_SECONDS | 600 | a mapping not programmed, or a dedicated Service not Ready, this long: reported, not held warm for; its model goes back to the pool |
    """

    every_minutes: int = 10
    hold_minutes: float = 60
    dedicate_share: float = 0.7
    pool_share: float = 0.35
    models_per_pod: int = 64
    preload_timeout_s: float = 2.0
    gateway: str | None = None
    control_url: str = "http://{name}-control.{namespace}.svc.cluster.local:8081"
    model_memory_mb: float = 4.0
    model_load_ms: float = 50.0
    choose_every_minutes: int = 1440
    history_minutes: int = 10080
    fleet_budget: float | None = None
    not_ready_s: float = 600.0

    @classmethod
    def from_env(cls, env: Mapping[str, str], warmup_gateway: str | None = None) -> "PoolSettings":
        """`warmup_gateway` is not used for pre-loads (the repository API is on the control port)."""
        settings = cls(every_minutes=whole(env, "PLACEMENT_EVERY_MINUTES", 10, 1),
                       hold_minutes=number(env, "PLACEMENT_HOLD_MINUTES", 60, 0),
                       dedicate_share=number(env, "PLACEMENT_DEDICATE_SHARE", 0.7, 0),
                       pool_share=number(env, "PLACEMENT_POOL_SHARE", 0.35, 0),
                       models_per_pod=whole(env, "POOL_MODELS_PER_POD", 64, 0),
                       preload_timeout_s=number(env, "PRELOAD_TIMEOUT_SECONDS", 2.0, 0.1),
                       gateway=optional(env, "PRELOAD_GATEWAY"),
                       control_url=optional(env, "POOL_CONTROL_URL") or cls.control_url,
                       model_memory_mb=number(env, "POOL_MODEL_MEMORY_MB", 4.0, 0.001),
                       model_load_ms=number(env, "POOL_MODEL_LOAD_MS", cls.model_load_ms, 0),
                       choose_every_minutes=whole(env, "POOL_WARMTH_EVERY_MINUTES", 1440, 1),
                       history_minutes=whole(env, "POOL_HISTORY_MINUTES", 10080, 60),
                       fleet_budget=number(env, "FLEET_BUDGET", 0.0, 0.0) or None,
                       not_ready_s=number(env, "POOL_NOT_READY_SECONDS", 600.0, 0.0))
        if settings.pool_share > settings.dedicate_share:
            raise SettingsError("PLACEMENT_POOL_SHARE must not exceed PLACEMENT_DEDICATE_SHARE (the hysteresis band)")
        return settings
