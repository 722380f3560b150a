"""Prometheus metrics of the inference server (recorded by the data plane, `DataPlane.handle`).

The forecast function reads `infer_requests_total` as the service's traffic, so only requests
a client made count: health probes and scrapes of /metrics do not. Under several gunicorn workers
prometheus-client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set by `infer.serve`) sums the
workers, so a scrape sees the whole server and not whichever worker answered it.
"""

from __future__ import annotations

import os
from functools import lru_cache

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUESTS = Counter(
    "infer_requests",
    "Inference server requests made by clients (probes and /metrics excluded).",
    ["model", "protocol", "code"],
)
LATENCY = Histogram(
    "infer_request_duration_seconds",
    "Time from request received to response started, by model and protocol.",
    ["model", "protocol"],
    buckets=LATENCY_BUCKETS,
)
IN_FLIGHT = Gauge(
    "infer_requests_in_flight",
    "Client requests being handled now.",
    ["model"],
    multiprocess_mode="livesum",
)
LOAD_SECONDS = Gauge(
    "infer_model_load_seconds",
    "Seconds the model took to load and answer its warm-up prediction.",
    ["model"],
    multiprocess_mode="max",
)

# -- cold start: how long a process took to become ready, and who waited for it ------
COLD_START_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0)
START_TO_READY = Gauge(
    "infer_start_to_ready_seconds",
    "Seconds from this process's start (the kernel's record of it) to ready: the model loaded "
    "and warmed up, or in the pool the repository manifest verified.",
    multiprocess_mode="max",
)
COLD_START_WAIT = Histogram(
    "infer_cold_start_wait_seconds",
    "For client requests that arrived before this process was ready (arrival stamped by the "
    "proxy that held them, X-Request-Start), how long they waited for ready; the _count is the "
    "number of cold-start requests.",
    buckets=COLD_START_BUCKETS,
)

# -- the model pool (MODEL_REPOSITORY) ----------------------------------------------------------
POOL_LOAD_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
POOL_LOADS = Counter(
    "infer_pool_model_loads",
    "Model loads in the pool (on a request or through the repository API), by outcome: "
    "loaded, or refused (sha256, budget, unreadable, warm-up failed).",
    ["model", "outcome"],
)
POOL_LOAD_DURATION = Histogram(
    "infer_pool_model_load_duration_seconds",
    "Time to read, verify (sha256), load and warm up one model in the pool.",
    ["model"],
    buckets=POOL_LOAD_BUCKETS,
)
POOL_LOAD_WAIT = Histogram(
    "infer_pool_model_load_wait_seconds",
    "For client requests that found their model not loaded, how long they waited for its load "
    "(their own or a concurrent one); the _count is the number of model-load waits.",
    ["model"],
    buckets=POOL_LOAD_BUCKETS,
)
POOL_EVICTIONS = Counter(
    "infer_pool_model_evictions",
    "Models taken out of memory, by reason: lru (to make room within POOL_MEMORY_MB) or "
    "unload (the repository API).",
    ["model", "reason"],
)
POOL_MODELS_LOADED = Gauge("infer_pool_models_loaded", "Models loaded in the pool now.", multiprocess_mode="livesum")
POOL_MODEL_MEMORY = Gauge(
    "infer_pool_model_memory_bytes",
    "Estimated memory of each loaded model (see docs/pool/serving.md: file size x a per-format factor + a "
    "per-model overhead); 0 when not loaded.",
    ["model"],
    multiprocess_mode="livesum",
)
POOL_MEMORY_USED = Gauge(
    "infer_pool_memory_used_bytes", "Estimated memory of all loaded models.", multiprocess_mode="livesum"
)
POOL_MEMORY_BUDGET = Gauge(
    "infer_pool_memory_budget_bytes", "POOL_MEMORY_MB, in bytes.", multiprocess_mode="max"
)


POOL_REPOSITORY_RELOADS = Counter(
    "infer_pool_repository_reloads",
    "Repository manifest changes the pool noticed, by outcome: applied, or refused (the last good "
    "manifest keeps serving).",
    ["outcome"],
)
POOL_REPOSITORY_MODELS = Gauge(
    "infer_pool_repository_models", "Models the pool's verified repository lists.", multiprocess_mode="max"
)
REQUEST_MEMORY_RESERVED = Gauge(
    "infer_request_memory_reserved_bytes",
    "Memory reserved now by requests being read and decoded (body x its content type's decoding factor).",
    multiprocess_mode="livesum",
)
ADMISSION_REFUSED = Counter(
    "infer_requests_refused_for_memory",
    "Requests not admitted because their decoding would not fit REQUEST_MEMORY_MB: busy (503, "
    "retryable) or too_large (413: it can never fit).",
    ["reason"],
)

OTHER_MODELS = "other"
"""The `model` label of every model beyond METRIC_MODELS (bounded label cardinality)."""
_model_labels: set[str] = set()
_model_label_cap = 200


def cap_model_labels(cap: int) -> None:
    global _model_label_cap
    _model_label_cap = cap


def model_label(name: str) -> str:
    """`name` as a label value while fewer than METRIC_MODELS names have been used, else
    `other`: the series of a 10,000-model pool stay bounded, the busiest models (first seen)
    keep theirs."""
    if name in _model_labels:
        return name
    if len(_model_labels) < _model_label_cap:
        _model_labels.add(name)
        return name
    return OTHER_MODELS


@lru_cache(maxsize=1024)
def request_series(model: str, protocol: str, code: str) -> Counter:
    """The counter child for one label set, looked up once: `labels()` costs ~15 us a call,
    which is measurable against a ~100 us prediction."""
    return REQUESTS.labels(model, protocol, code)


@lru_cache(maxsize=256)
def latency_series(model: str, protocol: str) -> Histogram:
    return LATENCY.labels(model, protocol)


@lru_cache(maxsize=256)
def in_flight_series(model: str) -> Gauge:
    return IN_FLIGHT.labels(model)


def render() -> tuple[bytes, str]:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
