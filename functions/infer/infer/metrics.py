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
