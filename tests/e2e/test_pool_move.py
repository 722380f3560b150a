"""A model moved from the pool to its dedicated Service and back while its traffic flows, end to end:
the scale function under func-python (its real kubernetes client against the API double, whose
DomainMapping is programmed half a second after each patch, as a real route takes a moment to
reach the gateways), real Redis, and the Serving stand-in running the pool and the dedicated
Service as real infer processes, routing the model's own host through that DomainMapping. Every
request (V2 and MLflow /invocations, which names the model only by its host) is counted: none
may be lost, answered 5xx or meet a cold target, and each tier must really have served some."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import pytest
import requests

from localmode.kube_api_double import KubeApiDouble, scale_function_rules
from localmode.processes import wait_until
from localmode.serving_standin import ServiceRuntime, ServingStandIn
from tests.scale.conftest import LABEL, TICK0, decisions, forecast, minutes, send
from tests.support.functions import start_function
from tests.support.manifests import crd_schemas
from tests.support.servers import ROOT

NS = "models"
HOST = "wine.models.example.com"
MINUTE_S = 2.0  # the stand-in's KPA windows: a 60 s window lasts 2 s here


@pytest.fixture
def fleet(models_dir, tmp_path, redis_db):
    double = KubeApiDouble(scale_function_rules(ROOT, placement=True), version="1.21", schemas=crd_schemas(),
                           mapping_reconcile_s=0.5)
    double.add_service(NS, "infer-pool", {**LABEL, "predictive-scaling.io/pool": "true"})
    double.add_service(NS, "infer-wine", LABEL)
    double.add_domain_mapping(NS, HOST, "infer-pool", labels={"predictive-scaling.io/model": "wine"},
                              annotations={"predictive-scaling.io/dedicated-service": "infer-wine"})
    # a pooled neighbour: with one model a pod, the pool cannot hold both once wine is busy, so
    # placement by memory lets wine leave (alone in the pool it would stay: nothing to crowd)
    double.add_service(NS, "infer-diabetes", LABEL)
    double.add_domain_mapping(NS, "diabetes.models.example.com", "infer-pool",
                              labels={"predictive-scaling.io/model": "diabetes"},
                              annotations={"predictive-scaling.io/dedicated-service": "infer-diabetes"})
    standin = ServingStandIn(mappings=double.mapping_target)
    for name, kwargs in (("infer-pool", {"model": None, "repository": models_dir}),
                         ("infer-wine", {"model": models_dir / "wine.onnx"})):
        revision = f"{name}-00001"
        standin.add(ServiceRuntime(
            NS, name, annotations=lambda r=revision: double.annotations("revisions", NS, r), minute_s=MINUTE_S,
            log_dir=tmp_path, on_ready=lambda n, r=revision: double.set_actual_replicas(NS, r, n), **kwargs))
    fn = start_function("scale", {
        "REDIS_URL": redis_db, "KUBERNETES_API_URL": double.url, "MAX_FORECAST_AGE_SECONDS": "0",
        "WARMUP_GATEWAY": standin.url, "PRELOAD_GATEWAY": standin.url, "WARMUP_PATH": "/v2/health/ready", "BURST_RISK": "off",
        "COOLDOWN_SECONDS": "0", "PLACEMENT_EVERY_MINUTES": "1", "PLACEMENT_HOLD_MINUTES": "2",
        "POOL_MODELS_PER_POD": "1", "POOL_MODEL_LOAD_MS": "1000",  # a crowded pool: the busy model leaves
    }, tmp_path / "scale.log")
    yield double, standin, fn
    fn.stop()
    standin.close()
    double.close()


class Traffic:
    """Requests to the model's own host, back to back from two clients, until stopped."""

    def __init__(self, gateway: str, row: list[float]):
        self.gateway = gateway
        self.v2 = {"inputs": [{"name": "input-0", "shape": [1, len(row)], "datatype": "FP64", "data": row}]}
        self.mlflow = {"instances": [row]}
        self.outcomes: Counter = Counter()
        self.cold_at: list[float] = []
        """When a request that waited for a replica to start (the stand-in's X-Local-Cold-Start-Ms) was sent."""
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(2)]

    def _run(self, i: int) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            path, body = ("/v2/models/wine/infer", self.v2) if i == 0 else ("/invocations", self.mlflow)
            sent = time.monotonic()
            try:
                r = session.post(self.gateway + path, json=body, headers={"Host": HOST}, timeout=60)
                if float(r.headers.get("X-Local-Cold-Start-Ms", "0")) > 0:
                    self.cold_at.append(sent)
                ok = r.status_code == 200 and ("outputs" in r.json() if i == 0 else "predictions" in r.json())
                self.outcomes["ok" if ok else f"{r.status_code}"] += 1
            except (requests.RequestException, ValueError) as exc:
                self.outcomes[type(exc).__name__] += 1
            time.sleep(0.02)

    def __enter__(self) -> "Traffic":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(70)


def test_a_model_moves_to_its_own_service_and_back_with_no_request_lost_or_failed(fleet, models_dir):
    double, standin, fn = fleet
    row = json.loads((models_dir / "manifest.json").read_text())["artifacts"][0]["example"][0]
    pool, dedicated = (standin.services[standin.host(NS, n)] for n in ("infer-pool", "infer-wine"))
    tick = TICK0
    moves: list[dict] = []

    def drive(rate: float, until_target: str, ticks: int) -> None:
        """One forecast event a second (a tick is a minute to the scale function) until the move is
        applied and programmed; at least `ticks` ticks, and as long as a loaded machine needs for
        the target's replica to start (a wall-clock bound, not a timing assertion)."""
        nonlocal tick
        deadline = time.monotonic() + 180
        sent = 0
        while sent < ticks or time.monotonic() < deadline:
            sent += 1
            data = decisions(send(fn, forecast(tick, {f"{NS}/wine": minutes(rate + 1, 1.0, point_rps=rate),
                                                      f"{NS}/diabetes": minutes(2, 1.0, point_rps=1)}, f"move-{tick}")))
            tick += 1
            moves.extend(r["move"] for r in data.get("placement", []) if r.get("move") and r["move"].get("applied"))
            if double.mapping_target(NS, HOST) == until_target and moves and moves[-1]["target"] == until_target:
                return
            time.sleep(1.0)  # real time for replicas to start and report ready
        raise AssertionError(f"no move to {until_target} within {sent} ticks: {moves}")

    with Traffic(standin.url, row) as traffic:
        # the first requests wake the pool (cold, by design, before any move); wait until it serves
        wait_until(lambda: pool.stats.requests > 20, 120, "the pool serving the model's host")
        moving_from = time.monotonic()
        drive(8, "infer-wine", 15)  # busy: after the 2-minute hold, once infer-wine has a ready pod
        time.sleep(3)
        before = dedicated.stats.requests
        time.sleep(2)
        assert dedicated.stats.requests > before  # the dedicated Service serves the model's host now
        drive(1, "infer-pool", 20)  # quiet: back to the pool, once the pool has wine loaded
        time.sleep(3)
        before = pool.stats.requests
        time.sleep(2)
        assert pool.stats.requests > before
    assert [m["target"] for m in moves] == ["infer-wine", "infer-pool"]
    total = sum(traffic.outcomes.values())
    assert total > 100 and traffic.outcomes["ok"] == total, traffic.outcomes  # 0 lost, 0 5xx
    assert pool.stats.errors == 0 and dedicated.stats.errors == 0
    # no request met a cold target because of a move: each target was warm before its route moved
    assert [t for t in traffic.cold_at if t >= moving_from] == []
    print(f"requests {total}: {dict(traffic.outcomes)}; pool served {pool.stats.requests}, "
          f"dedicated {dedicated.stats.requests}")
