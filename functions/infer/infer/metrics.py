"""Prometheus metrics of the inference server, and the WSGI middleware that records them.

The forecast function reads `infer_requests_total` as the service's traffic, so only requests
a client made count: health probes and scrapes of /metrics do not. Under several gunicorn workers
prometheus-client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set by `infer.serve`) sums the
workers, so a scrape sees the whole server and not whichever worker answered it.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Iterable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Paths that are not traffic: probes (ours, KServe's, MLflow's, func-python's) and scrapes.
NOT_TRAFFIC = frozenset(
    {
        "/metrics",
        "/v2/health/live",
        "/v2/health/ready",
        "/ping",
        "/health",
        "/healthz",
        "/health/liveness",
        "/health/readiness",
    }
)

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


def protocol_of(path: str) -> str | None:
    """The protocol label for a path, or None when the request is not traffic."""
    if path in NOT_TRAFFIC:
        return None
    if path.startswith("/v2"):
        return "v2"
    if path.startswith("/v1"):
        return "v1"
    if path in {"/invocations", "/version"}:
        return "mlflow"
    return "other"


class MetricsMiddleware:
    """Counts every client request with the status actually sent, 413s and 404s included."""

    def __init__(self, app: Callable, model_name: Callable[[], str]):
        self.app = app
        self.model_name = model_name

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        protocol = protocol_of(environ.get("PATH_INFO", ""))
        if protocol is None:
            return self.app(environ, start_response)
        model = self.model_name()
        status = ["500"]

        def recording_start_response(status_line: str, headers: list, exc_info=None):
            status[0] = status_line[:3]
            return start_response(status_line, headers, exc_info)

        in_flight = IN_FLIGHT.labels(model)
        in_flight.inc()
        started = time.perf_counter()
        try:
            return self.app(environ, recording_start_response)
        finally:
            LATENCY.labels(model, protocol).observe(time.perf_counter() - started)
            REQUESTS.labels(model, protocol, status[0]).inc()
            in_flight.dec()


def render() -> tuple[bytes, str]:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
