"""The whole control loop on one machine, with real parts: Redis and Prometheus processes, the
forecast, scale and dead-letter functions under func-python (as `func run --builder=host` runs
them), the local broker routing by the Triggers in eventing/, a PingSource on the loop's clock,
the Kubernetes API double holding the Knative Services, and the Serving stand-in starting real
infer processes. Used by `make demo` and by the end-to-end test.

Each service is replayed from per-minute counts: a week (or less) of history is back-filled into
Prometheus on the loop's clock before the start, then the rest is sent live as real requests,
spread within each minute by a seeded Poisson process. A service not opted in (no label) is the
KPA-only control arm: the scale function is told about it and leaves it alone.
"""

from __future__ import annotations

import json
import logging
import subprocess
import threading

import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import redis
import requests

from localmode.ping_source import PingSource
from localmode.processes import Server, free_port, start_function, start_prometheus, start_redis, stop
from localmode.router import LocalBroker, load_triggers
from localmode.serving_standin import ServiceRuntime, ServingStandIn
from localmode.kube_api_double import KubeApiDouble, scale_function_rules
from localmode.prometheus_backfill import create_blocks, write_openmetrics

ROOT = Path(__file__).resolve().parents[1]
OPT_IN = {"predictive-scaling.io/enabled": "true"}
log = logging.getLogger("localmode.loop")


@dataclass
class ServicePlan:
    name: str
    model: Path
    counts: np.ndarray
    """Requests per minute: history first, then the minutes replayed live."""
    history: int
    """How many of `counts` are back-filled history (the rest is replayed)."""
    payload: dict
    opted_in: bool = True
    namespace: str = "models"
    annotations: dict[str, str] = field(default_factory=lambda: {"predictive-scaling.io/pod-capacity": "300"})
    traffic_key: str = ""
    """Plans with the same key get the same request times (the two arms of a comparison)."""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass
class Sent:
    service: str
    minute: int
    at: float
    status: int | str
    latency_s: float
    waited_s: float


class LocalLoop:
    def __init__(self, base: Path, plans: list[ServicePlan], minute_s: int, forecaster_root: Path,
                 seed: int = 0, extra_scale_env: dict[str, str] | None = None):
        self.base = base
        self.plans = plans
        self.minute_s = minute_s
        self.forecaster_root = forecaster_root
        self.seed = seed
        self.extra_scale_env = extra_scale_env or {}
        self.functions: dict[str, subprocess.Popen] = {}
        self.function_urls: dict[str, str] = {}
        self.sent: list[Sent] = []
        self.redis: Server | None = None
        self.prometheus: Server | None = None
        self.double: KubeApiDouble | None = None
        self.standin: ServingStandIn | None = None
        self.broker: LocalBroker | None = None
        self.ping: PingSource | None = None
        self.start_minute = 0
        self.prometheus_url = ""
        self._closing = threading.Event()

    # -- set-up ----------------------------------------------------------------------------
    def start(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        self.redis = start_redis(self.base / "redis")
        rules = scale_function_rules(ROOT)
        self.double = KubeApiDouble(rules, version="1.21")
        self.standin = ServingStandIn()
        for plan in self.plans:
            self.double.add_service(plan.namespace, plan.name, OPT_IN if plan.opted_in else {"arm": "kpa-only"})
            if plan.annotations:
                self.double.touch("serving.knative.dev", "services", plan.namespace, plan.name, plan.annotations)
            self.standin.add(ServiceRuntime(
                plan.namespace, plan.name, plan.model, self._annotations_of(plan), self.minute_s, self.base))
        # The functions start first (the slow part; the forecast function does not call
        # Prometheus before its first tick), then the history is back-filled to end exactly
        # where the live replay begins, a few seconds ahead, and Prometheus starts on it.
        prometheus_port = free_port()
        self.prometheus_url = f"http://127.0.0.1:{prometheus_port}"
        self.start_function("deadletter", {"REDIS_URL": self.redis.url})
        self.start_function("forecast", self._forecast_env())
        self.start_function("scale", self._scale_env())
        self.broker = LocalBroker(load_triggers(ROOT / "eventing", self._resolve))
        self.ping = PingSource(ROOT / "eventing" / "pingsource.yaml", self.broker.publish, self.minute_s)
        (n_history,) = {p.history for p in self.plans}
        self.start_minute = int((time.time() + max(3 * self.minute_s, 15)) // self.minute_s) + 1
        if n_history:
            with (self.base / "history.om").open("w") as out:
                write_openmetrics(out, {p.key: p.counts[: p.history] for p in self.plans},
                                  self.start_minute - n_history, presets=["istio"], per_minute=4, minute_s=self.minute_s)
            create_blocks(self.base / "history.om", self.base / "prometheus" / "data")
        self.prometheus = start_prometheus(self.base / "prometheus", [self.standin.url.removeprefix("http://")],
                                           port=prometheus_port, scrape_interval_s=self.minute_s / 4,
                                           job="istio-ingressgateway")  # the stand-in is the gateway

    def _annotations_of(self, plan: ServicePlan):
        revision = f"{plan.name}-00001"
        return lambda: self.double.annotations("revisions", plan.namespace, revision)

    def _resolve(self, name: str) -> str:
        return self.function_urls[name]

    def _forecast_env(self) -> dict[str, str]:
        return {"REDIS_URL": self.redis.url, "PROMETHEUS_URL": self.prometheus_url, "METRICS_PRESET": "istio",
                "FORECASTER_ROOT": str(self.forecaster_root), "MINUTE_SECONDS": str(self.minute_s),
                "PROMETHEUS_TIMEOUT_SECONDS": "5", "FORECAST_HISTORY": "1440",
                # the stand-in is both the gateway and kube-state-metrics: one scrape job
                "HEARTBEAT_SELECTOR": 'job="istio-ingressgateway"'}  # the report reads the whole run

    def _scale_env(self) -> dict[str, str]:
        return {"REDIS_URL": self.redis.url, "KUBERNETES_API_URL": self.double.url,
                "MAX_FORECAST_AGE_SECONDS": "0", "COOLDOWN_SECONDS": str(self.minute_s),
                "WARMUP_GATEWAY": self.standin.url, "PRELOAD_GATEWAY": self.standin.url, "WARMUP_PATH": "/v2/health/ready", "DECISION_HISTORY": "1440",
                **self.extra_scale_env}

    def start_function(self, name: str, env: dict[str, str], port: int | None = None) -> str:
        url, process = start_function(ROOT / "functions" / name, env, self.base / f"{name}.log", port)
        self.functions[name] = process
        self.function_urls[name] = url
        return url

    def restart_function(self, name: str) -> None:
        """Stop it and start a new instance on the same address (the broker's subscriber URL)."""
        stop(self.functions.pop(name))
        env = {"scale": self._scale_env, "forecast": self._forecast_env}[name]()
        self.start_function(name, env, port=int(self.function_urls[name].rsplit(":", 1)[1]))

    # -- running ---------------------------------------------------------------------------
    def replay(self, progress=None) -> None:
        """Send every planned request at its time; returns when the last has been answered."""
        schedule: list[tuple[float, ServicePlan, int]] = []
        for plan in self.plans:
            live = plan.counts[plan.history:]
            rng = np.random.default_rng([self.seed, zlib.crc32((plan.traffic_key or plan.name).encode())])
            for k, count in enumerate(np.nan_to_num(live).astype(int)):
                offsets = np.sort(rng.random(count))
                minute = self.start_minute + k
                schedule += [((minute + u) * self.minute_s, plan, minute) for u in offsets]
        schedule.sort(key=lambda item: item[0])
        pool = ThreadPoolExecutor(max_workers=64, thread_name_prefix="replay")
        futures = []
        total_minutes = max(len(p.counts) - p.history for p in self.plans)
        last_report = -1
        for at, plan, minute in schedule:
            delay = at - time.time()
            if delay > 0 and self._closing.wait(delay):
                break
            futures.append(pool.submit(self._send, plan, minute, at))
            if progress and minute - self.start_minute != last_report:
                last_report = minute - self.start_minute
                progress(last_report, total_minutes)
        end = (self.start_minute + total_minutes) * self.minute_s
        if time.time() < end:
            self._closing.wait(end - time.time())
        for future in futures:
            future.result()
        pool.shutdown()

    def _send(self, plan: ServicePlan, minute: int, at: float) -> None:
        started = time.monotonic()
        try:
            r = requests.post(f"{self.standin.url}/v2/models/{plan.payload['model']}/infer", json=plan.payload["body"],
                              headers={"Host": self.standin.host(plan.namespace, plan.name)}, timeout=90)
            status, waited = r.status_code, float(r.headers.get("X-Local-Cold-Start-Ms", "0")) / 1000
        except requests.RequestException as exc:
            status, waited = type(exc).__name__, 0.0
        self.sent.append(Sent(plan.key, minute, at, status, time.monotonic() - started, waited))

    # -- reading the outcome ---------------------------------------------------------------
    def store(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis.url)

    def forecasts(self, service: str) -> list[dict]:
        return [json.loads(x) for x in reversed(self.store().lrange(f"forecast:log:{service}", 0, -1))]

    def decisions(self, service: str) -> list[dict]:
        return [json.loads(x) for x in reversed(self.store().lrange(f"scale:log:{service}", 0, -1))]

    def dead_letters(self) -> list[dict]:
        return [json.loads(x) for x in self.store().lrange("deadletter:events", 0, -1)]

    def min_scale_writes(self, plan: ServicePlan) -> list[tuple[float, str]]:
        """(time, min-scale) of every successful write to the plan's Revision."""
        return [(c.at, c.body["metadata"]["annotations"]["autoscaling.knative.dev/min-scale"])
                for c in self.double.requests
                if c.method == "PATCH" and c.name == f"{plan.name}-00001" and c.status == 200
                and "autoscaling.knative.dev/min-scale" in (c.body or {}).get("metadata", {}).get("annotations", {})]

    def close(self) -> None:
        self._closing.set()
        for closer in (lambda: self.ping and self.ping.stop(), lambda: self.broker and self.broker.close(),
                       lambda: self.standin and self.standin.close(), lambda: self.double and self.double.close()):
            try:
                closer()
            except Exception:  # noqa: BLE001 - closing must reach every process
                log.exception("while closing")
        for process in self.functions.values():
            stop(process)
        for server in (self.prometheus, self.redis):
            if server is not None:
                server.stop()

    def __enter__(self) -> "LocalLoop":
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

