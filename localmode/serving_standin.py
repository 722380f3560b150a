"""A local stand-in for Knative Serving + the Istio ingress gateway, with real cold starts.

Requests come to one gateway port and are routed by `Host:` (`<service>.<namespace>.<domain>`,
as users curl Istio). Each Knative Service has replicas that are real infer processes
(`python -m infer.serve`, one gunicorn worker): a request that finds none ready waits while one
starts (the activator's buffering), so its added latency is a real process start and model load.

The autoscaler is a small KPA: every tick it reads the routed Revision's `min-scale` and `window`
annotations (where the scale function writes them, on the API double), keeps at least min-scale
replicas, adds replicas when in-flight requests exceed the per-pod target, and lets the
replicas above min-scale go once no request has been seen for the stable window (Knative's
scale-to-zero with the activator in the path: about one window after the last request), or for
the Revision's `scale-to-zero-pod-retention-period` when that is longer (a keep-alive). Windows
are in the loop's minutes: with `minute_s` < 60 (the accelerated demo) they shrink alike.

The model pool: a runtime given a `repository` runs its replicas as the multi-model server
(`python -m infer.serve --repository`, MODEL_REPOSITORY), each replica with its own models
loaded, as pool pods have. A host that is no Service's own is looked up as a DomainMapping
(`mappings`: the API double's, so the route is the one the scale function patches, programmed
after the double's reconcile delay), and the request goes to the Service it points at with the
mapped host kept in `Host:` (what the queue-proxy restores from K-Original-Host). A runtime's
ready replicas are reported back (`on_ready`: the Revision's status.actualReplicas on the double,
what the scale function reads before it moves a model). A replica's /metrics is read before it
is stopped, so that the pool's model loads and their waits outlive it.

The gateway exports `istio_requests_total` at /metrics, labelled as Istio's gateway does, and
`kube_service_labels` for each Revision's Kubernetes Service, as kube-state-metrics does, so the
forecast function reads it with its `istio` preset, as it would read a real cluster.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import requests
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from training.publish_model import pinned_env

from localmode.processes import free_port, stop

ROOT = Path(__file__).resolve().parents[1]
MIN_SCALE = "autoscaling.knative.dev/min-scale"
MAX_SCALE = "autoscaling.knative.dev/max-scale"
WINDOW = "autoscaling.knative.dev/window"
RETENTION = "autoscaling.knative.dev/scale-to-zero-pod-retention-period"


@dataclass
class Replica:
    port: int
    process: subprocess.Popen
    spawned: float
    ready_at: float | None = None
    stopped: float | None = None
    inflight: int = 0
    started_by_request: bool = False
    control_port: int | None = None
    """The pool's control port (POOL_CONTROL_PORT): where its repository API is served."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url_for(self, path: str) -> str:
        """The repository API goes to the control port, as the pool's `<pool>-control` Service
        routes it in a cluster; every other path to the serving port."""
        if self.control_port is not None and path.startswith("/v2/repository/"):
            return f"http://127.0.0.1:{self.control_port}{path}"
        return self.url + path


@dataclass
class ServiceStats:
    requests: int = 0
    errors: int = 0
    cold_requests: int = 0
    """Requests that found no ready replica and waited for one to start."""
    waited_s: list[float] = field(default_factory=list)
    latency_s: list[float] = field(default_factory=list)
    timeline: list[tuple[float, int, int, int]] = field(default_factory=list)
    """(time, ready replicas, starting replicas, min-scale) at every change."""


class ServiceRuntime:
    def __init__(self, namespace: str, name: str, model: Path | None, annotations: Callable[[], dict[str, str]],
                 minute_s: float, log_dir: Path, target_concurrency: float = 8.0, repository: Path | None = None,
                 on_ready: Callable[[int], None] | None = None, extra_env: dict[str, str] | None = None):
        self.namespace = namespace
        self.name = name
        self.model = model
        self.repository = repository
        """Set for the pool: the replicas serve every model of this repository."""
        self.on_ready = on_ready
        self.extra_env = dict(extra_env or {})
        self.scraped: list[str] = []
        """Each stopped replica's last /metrics text (and the live ones' at `scrape_all`)."""
        self.annotations = annotations
        self.minute_s = minute_s
        self.log_dir = log_dir
        self.target = target_concurrency
        self.replicas: list[Replica] = []
        self.retired: list[Replica] = []
        self.stats = ServiceStats()
        self.last_request = -math.inf
        self.waiting = 0
        """Requests held while a replica starts (the activator's buffer): demand, like in-flight."""
        self._cond = threading.Condition()
        self._session = requests.Session()
        self.closed = False
        """Set by shutdown(): no replica starts after it (a request still waiting, or an autoscaler
        tick in flight, would otherwise start a process nobody stops)."""

    # -- requests --------------------------------------------------------------------------
    def forward(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict, bytes, float]:
        arrived = time.monotonic()
        # Stamped as an ingress proxy does (X-Request-Start), so that a replica that became ready
        # after this request arrived counts it in infer_cold_start_wait_seconds.
        stamp = f"t={time.time():.6f}"
        with self._cond:
            self.last_request = time.time()
            replica = self._ready()
            waited = 0.0
            if replica is None:
                self.waiting += 1
                deadline = arrived + 60
                while replica is None and time.monotonic() < deadline and not self.closed:
                    if not any(r.ready_at is None and r.process.poll() is None for r in self.replicas):
                        self._spawn(by_request=True)
                    self._cond.wait(0.5)
                    replica = self._ready()
                self.waiting -= 1
                waited = time.monotonic() - arrived
                if replica is None:
                    self.stats.requests += 1
                    self.stats.errors += 1
                    return 503, {"Content-Type": "application/json"}, b'{"error": "no replica became ready"}', waited
                self.stats.cold_requests += 1
            replica.inflight += 1
        try:
            response = self._session.request(method, replica.url_for(path), data=body, timeout=30, headers={
                **{k: v for k, v in headers.items() if k.lower() in ("content-type", "accept", "host")},
                "X-Request-Start": stamp})
            status, out_headers, content = response.status_code, {"Content-Type": response.headers.get(
                "Content-Type", "application/json")}, response.content
        except requests.RequestException as exc:
            status, out_headers, content = 502, {"Content-Type": "text/plain"}, str(exc).encode()
        with self._cond:
            replica.inflight -= 1
            self.last_request = time.time()
            self.stats.requests += 1
            self.stats.errors += status >= 500
            self.stats.waited_s.append(waited)
            self.stats.latency_s.append(time.monotonic() - arrived)
            self._cond.notify_all()
        return status, out_headers, content, waited

    def _ready(self) -> Replica | None:
        ready = [r for r in self.replicas if r.ready_at is not None and r.process.poll() is None]
        return min(ready, key=lambda r: r.inflight) if ready else None

    # -- replicas --------------------------------------------------------------------------
    def _spawn(self, by_request: bool = False) -> None:
        if self.closed:
            return
        port = free_port()
        control = free_port() if self.repository is not None else None
        # the local publish step: the digest from the manifest, pinned in the replica's env
        env = {**os.environ, "PYTHONPATH": str(ROOT / "functions" / "infer"), "LOG_LEVEL": "WARNING",
               **(pinned_env(self.model) if self.repository is None else {"POOL_CONTROL_PORT": str(control)}),
               **self.extra_env}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        log = (self.log_dir / f"{self.name}-{port}.log").open("ab")
        serves = ["--repository", str(self.repository)] if self.repository is not None else ["--model", str(self.model)]
        process = subprocess.Popen([sys.executable, "-m", "infer.serve", *serves, "--port", str(port),
                                    "--workers", "1"], env=env, stdout=log, stderr=subprocess.STDOUT)
        replica = Replica(port, process, time.time(), started_by_request=by_request, control_port=control)
        self.replicas.append(replica)
        self._mark()
        threading.Thread(target=self._await_ready, args=(replica,), daemon=True).start()

    def _await_ready(self, replica: Replica) -> None:
        while replica.process.poll() is None and replica.stopped is None:
            try:
                if requests.get(replica.url + "/v2/health/ready", timeout=1).status_code == 200:
                    with self._cond:
                        replica.ready_at = time.time()
                        self._mark()
                        self._cond.notify_all()
                    return
            except requests.RequestException:
                pass
            time.sleep(0.02)

    def _retire(self, replica: Replica) -> None:
        self._scrape(replica)
        self.replicas.remove(replica)
        replica.stopped = time.time()
        self.retired.append(replica)
        self._mark()
        threading.Thread(target=stop, args=(replica.process, 5), daemon=True).start()

    def _scrape(self, replica: Replica) -> None:
        if replica.ready_at is None or replica.process.poll() is not None:
            return
        try:
            self.scraped.append(requests.get(replica.url + "/metrics", timeout=2).text)
        except requests.RequestException:
            pass

    def scrape_all(self) -> list[str]:
        """Every replica's metrics: the stopped ones' last reading and the live ones' now."""
        with self._cond:
            live = list(self.replicas)
        texts = list(self.scraped)
        for replica in live:
            if replica.ready_at is not None and replica.process.poll() is None:
                try:
                    texts.append(requests.get(replica.url + "/metrics", timeout=2).text)
                except requests.RequestException:
                    pass
        return texts

    def _mark(self) -> None:
        ready = sum(r.ready_at is not None for r in self.replicas)
        self.stats.timeline.append((time.time(), ready, len(self.replicas) - ready, self._min_scale()))
        if self.on_ready is not None:
            self.on_ready(ready)

    def _min_scale(self) -> int:
        value = self.annotations().get(MIN_SCALE, "0")
        return int(value) if str(value).isdigit() else 0

    def window_s(self) -> float:
        raw = self.annotations().get(WINDOW, "60s")
        seconds = float(raw.rstrip("s")) * (60 if raw.endswith("m") else 1) if raw else 60.0
        return seconds * self.minute_s / 60.0

    def retention_s(self) -> float:
        """Knative's scale-to-zero-pod-retention-period (the per-model keep-alive), in loop time."""
        raw = str(self.annotations().get(RETENTION, "0s") or "0s")
        try:
            seconds = float(raw[:-1]) * {"s": 1, "m": 60, "h": 3600}[raw[-1]]
        except (KeyError, ValueError, IndexError):
            seconds = 0.0
        return seconds * self.minute_s / 60.0

    def autoscale(self) -> None:
        with self._cond:
            annotations = self.annotations()
            min_scale = self._min_scale()
            max_scale = int(annotations.get(MAX_SCALE, "10") or 10)
            inflight = sum(r.inflight for r in self.replicas) + self.waiting
            active = inflight > 0 or time.time() - self.last_request < max(self.window_s(), self.retention_s())
            need = max(1, math.ceil(inflight / (self.target * 0.7))) if active else 0
            desired = min(max_scale, max(min_scale, need))
            if len(self.replicas) < desired:
                for _ in range(desired - len(self.replicas)):
                    self._spawn()
            elif len(self.replicas) > desired:
                # starting replicas go first (Knative cancels unready pods first), then the newest idle
                idle = sorted((r for r in self.replicas if r.inflight == 0),
                              key=lambda r: (r.ready_at is not None, -r.spawned))
                for replica in idle[: len(self.replicas) - desired]:
                    self._retire(replica)
            if self.stats.timeline and self.stats.timeline[-1][3] != min_scale:
                self._mark()

    def replica_seconds(self, until: float | None = None) -> float:
        until = until or time.time()
        return sum((r.stopped or until) - r.spawned for r in self.replicas + self.retired)

    def shutdown(self) -> None:
        with self._cond:
            self.closed = True
            for replica in list(self.replicas):
                self._retire(replica)
            self.on_ready = None
        for replica in self.retired:
            stop(replica.process, 5)


class ServingStandIn:
    def __init__(self, domain: str = "example.com", tick_s: float = 0.05,
                 mappings: Callable[[str, str], str | None] | None = None):
        self.domain = domain
        self.mappings = mappings
        """(namespace, host) -> the Service a DomainMapping routes that host to now, or None."""
        self.services: dict[str, ServiceRuntime] = {}
        self.tick_s = tick_s
        self.registry = CollectorRegistry()
        self.requests_total = Counter(
            "istio_requests", "Requests through the ingress gateway", registry=self.registry,
            labelnames=["reporter", "source_workload", "destination_service_name",
                        "destination_service_namespace", "response_code"])
        self.service_labels = Gauge(
            "kube_service_labels", "Kubernetes Service labels (kube-state-metrics' family)", registry=self.registry,
            labelnames=["namespace", "service", "label_serving_knative_dev_service"])
        self.metrics_down = False
        """Fault injection: /metrics answers 503 (Prometheus' target down, `up` 0)."""
        self._stop = threading.Event()
        standin = self

        class Gateway(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _serve(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                host = (self.headers.get("Host") or "").split(":")[0]
                if self.path == "/metrics" and host not in standin.services and standin.metrics_down:
                    payload, status, headers = b"scrape target down", 503, {"Content-Type": "text/plain"}
                elif self.path == "/metrics" and host not in standin.services:
                    payload, status, headers = generate_latest(standin.registry), 200, {"Content-Type": "text/plain"}
                elif host in standin.services or standin.mapped(host) is not None:
                    runtime = standin.services.get(host) or standin.mapped(host)
                    status, headers, payload, waited = runtime.forward(self.command, self.path, dict(self.headers), body)
                    headers = {**headers, "X-Local-Cold-Start-Ms": f"{waited * 1000:.0f}"}
                    standin.requests_total.labels("source", "istio-ingressgateway", f"{runtime.name}-00001",
                                                  runtime.namespace, str(status)).inc()
                else:
                    payload, status, headers = b'{"error": "no such host"}', 404, {"Content-Type": "application/json"}
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout): nothing to answer

            do_GET = _serve
            do_POST = _serve

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        threading.Thread(target=self._autoscale_loop, daemon=True).start()

    def add(self, runtime: ServiceRuntime) -> None:
        self.services[f"{runtime.name}.{runtime.namespace}.{self.domain}"] = runtime
        self.service_labels.labels(runtime.namespace, f"{runtime.name}-00001", runtime.name).set(1)
        runtime._mark()

    def mapped(self, host: str) -> "ServiceRuntime | None":
        """The runtime a DomainMapping routes `host` (<name>.<namespace>.<domain>) to, if any."""
        parts = host.split(".")
        if self.mappings is None or len(parts) < 3:
            return None
        target = self.mappings(parts[1], host)
        return self.services.get(self.host(parts[1], target)) if target else None

    def host(self, namespace: str, name: str) -> str:
        return f"{name}.{namespace}.{self.domain}"

    def _autoscale_loop(self) -> None:
        while not self._stop.wait(self.tick_s):
            for runtime in list(self.services.values()):
                runtime.autoscale()

    def close(self) -> None:
        self._stop.set()
        for runtime in self.services.values():
            runtime.shutdown()
        self._server.shutdown()
        self._server.server_close()
