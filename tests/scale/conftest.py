"""Fixtures for the scale function: the Kubernetes API double (with the RBAC of serving/),
a real HTTP sink for warm-up requests, and the function itself under func-python."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from typing import Callable, Iterator

import pytest
import redis
import requests
from cloudevents.core.bindings.http import HTTPMessage, from_http_event, to_binary_event, to_structured_event
from cloudevents.core.v1.event import CloudEvent

from tests.support.functions import RunningFunction, start_function
from localmode.kube_api_double import KubeApiDouble, scale_function_rules
from tests.support.servers import ROOT

TICK0 = 29_000_000  # an epoch minute (2025-02-19 09:20 UTC)


def rbac_rules(legacy: bool = False):
    return scale_function_rules(ROOT, legacy)


@dataclass
class WarmupSink:
    url: str
    hits: list[dict] = field(default_factory=list)


@pytest.fixture
def warmup_sink() -> Iterator[WarmupSink]:
    sink = WarmupSink("")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            sink.hits.append({"host": self.headers.get("Host"), "path": self.path})
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sink.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield sink
    server.shutdown()
    server.server_close()


@pytest.fixture
def api_double() -> Iterator[KubeApiDouble]:
    double = KubeApiDouble(rbac_rules(), version="1.21")
    yield double
    double.close()


@pytest.fixture
def scale_fn(redis_db, warmup_sink, tmp_path) -> Iterator[Callable[..., RunningFunction]]:
    started: list[RunningFunction] = []

    def start(double: KubeApiDouble, **env: str) -> RunningFunction:
        fn = start_function("scale", {
            "REDIS_URL": redis_db, "KUBERNETES_API_URL": double.url, "MAX_FORECAST_AGE_SECONDS": "0",
            "WARMUP_GATEWAY": warmup_sink.url, "WARMUP_PATH": "/v2/health/ready",
            # Pods sized for the mean rate keep the tests' arithmetic plain (15 req/s: 2 pods);
            # test_burst_headroom_by_default covers the default peak-second sizing.
            "BURST_RISK": "off", **env,
        }, tmp_path / f"scale-{len(started)}.log")
        started.append(fn)
        _DOUBLES[id(fn)] = double
        return fn

    yield start
    for fn in started:
        fn.stop()


def minutes(upper_rps: float, p_any: float, n: int = 5, point_rps: float | None = None) -> list[dict]:
    point = upper_rps / 2 if point_rps is None else point_rps
    return [{"start": "", "point_rps": point, "upper_rps": upper_rps, "p_any": p_any} for _ in range(n)]


def forecast(tick_minute: int, services: dict[str, list[dict] | str], event_id: str) -> CloudEvent:
    """A forecast event as the forecast function replies it; a str value is a no-data reason."""
    entries = []
    for name, value in services.items():
        if isinstance(value, str):
            entries.append({"service": name, "status": "no-data", "reason": value})
        else:
            entries.append({"service": name, "status": "ok", "minutes": value})
    tick = datetime.fromtimestamp(tick_minute * 60, timezone.utc)
    return CloudEvent(attributes={
        "type": "io.predictive-scaling.forecast.v1", "source": "/predictive-scaling/forecast", "id": event_id,
        "time": tick, "datacontenttype": "application/json",
    }, data={"tick": tick.strftime("%Y-%m-%dT%H:%M:%SZ"), "model": {"version": "test"}, "services": entries})


_DOUBLES: dict[int, KubeApiDouble] = {}
"""The API double each started function reads, so that `send` lets its watches deliver first."""
_SENT_AT_RV: dict[int, int] = {}
"""The double's resourceVersion when each function last answered an event."""
WATCH_APPLY_S = 0.5
"""After the double has written a change to the function's watch streams, the function's watch
threads still have to read and apply it: a loaded machine (CI, two cores) has been seen to run
the event first. Not a timing assertion: a grace before sending, only when the double changed."""


def send(fn: RunningFunction, event: CloudEvent, structured: bool = False) -> requests.Response:
    """Send the event once the function's watches have been sent what the test changed in the
    double (its cache is eventually consistent, as a controller's is)."""
    double = _DOUBLES.get(id(fn))
    if double is not None:
        double.settle_watches()
        if _SENT_AT_RV.get(id(fn), double.resource_version) != double.resource_version:
            time.sleep(WATCH_APPLY_S)
    message = to_structured_event(event) if structured else to_binary_event(event)
    response = requests.post(fn.url, data=message.body, headers=message.headers, timeout=30)
    if double is not None:
        _SENT_AT_RV[id(fn)] = double.resource_version  # what the event itself wrote is the function's own
    return response


def decisions(response: requests.Response) -> dict:
    assert response.status_code == 200, response.text
    event = from_http_event(HTTPMessage(headers=dict(response.headers), body=response.content))
    assert event.get_type() == "io.predictive-scaling.decision.v1"
    return event.get_data()


def by_service(data: dict) -> dict[str, dict]:
    return {d["service"]: d for d in data["decisions"]}


def assert_spec_never_written(double: KubeApiDouble) -> None:
    for call in double.requests:
        if call.method in ("PATCH", "PUT"):
            assert call.resource in ("revisions", "podautoscalers"), call
            assert set(call.body) == {"metadata"}, call.body
            assert set(call.body["metadata"]) <= {"annotations", "resourceVersion"}, call.body


LABEL = {"predictive-scaling.io/enabled": "true"}


@dataclass
class PoolServer:
    url: str
    process: object
    control_url: str = ""
    """The pool's control port: its repository API (pre-loads) is served there only."""

    def ready(self, model: str) -> bool:
        return requests.get(f"{self.url}/v2/models/{model}/ready", timeout=5).status_code == 200


@pytest.fixture
def pool_server(models_dir, tmp_path) -> Iterator[PoolServer]:
    """The real multi-model server on the example models' repository, one worker (one "pod")."""
    import os
    import subprocess
    import sys

    from localmode.processes import free_port, stop, wait_until
    from tests.support.servers import ROOT as root

    port, control = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": str(root / "functions" / "infer"), "POOL_CONTROL_PORT": str(control)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    proc = subprocess.Popen([sys.executable, "-m", "infer.serve", "--repository", str(models_dir), "--port", str(port),
                             "--workers", "1"], env=env, stdout=(tmp_path / "pool.log").open("wb"),
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: requests.get(url + "/v2/health/ready", timeout=1).status_code == 200, 60, "pool server", proc)
    control_url = f"http://127.0.0.1:{control}"
    wait_until(lambda: requests.get(control_url + "/v2/health/ready", timeout=1).status_code == 200, 30, "control port", proc)
    yield PoolServer(url, proc, control_url)
    stop(proc)
