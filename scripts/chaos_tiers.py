"""`make chaos`'s pool rows on the scale side: a tier that cannot serve, and a mapping that never
settles: no URL is ever routed to nothing. The parts are the local loop's (localmode/): the
API double (its DomainMappings programmed `RECONCILE_S` after each patch), the Serving stand-in
running the pool (the multi-model server) and the dedicated Service as real infer processes and
routing each model's host through its DomainMapping, real Redis, and the real scale function
under func-python, sent one forecast event per second (each a minute of its clock, as in
tests/e2e/test_pool_move.py), with POOL_NOT_READY_SECONDS shortened to NOT_READY_S.

Faults:
- dedicated Service deleted while its model is routed to it: wine's mapping points at
  `infer-wine`, two clients send wine requests to wine's host, and `infer-wine` is deleted as
  `kubectl delete ksvc` does (background propagation): the API double honours finalizers, so the
  scale function's `predictive-scaling.io/routed` finalizer keeps the Service, its Revisions and
  pods serving; when the last finalizer goes, the cascade removes its Revisions from the API and
  its pods from the gateway. The scale function must load wine in the pool, send it back there (a
  counted fallback move, by its watch at once or by the next event), and release the Service
  once the route is programmed; the host must answer throughout. A wine request is lost when it is not answered 200 after the client's
  retries (5 tries, 503s and connection errors retried after Retry-After / 0.2 s; a 404 is
  final): a request meeting a route to nothing gets the gateway's 404 and is lost. The row fails
  unless wine is back in the pool and the Service is gone. About 15 s.
- mapping stuck not Ready: diabetes' mapping (routed to the pool) loses its ClusterDomainClaim and
  is re-reconciled, so it stays Ready False while its route stays in the gateways (Knative keeps
  the last programmed ingress). Forecasts say no model is busy: only the unsettled mapping holds
  the pool warm, until NOT_READY_S has passed; then the mapping is reported (decision record,
  `scale_placement_mappings_not_ready`) and the pool's min-scale goes back to 0.

Per row (in the pool table of scripts/chaos_pool.py): requests sent (to the models' hosts), lost,
answered 500, 503s (retried), every status seen (notes), and "URLs routed to nothing":
model hosts whose mapping routes (in the gateways) to no running Service, or that do not answer
a V2 request 200, at the end of the row. Must be 0 lost, 0 answered 500, 0 routed to nothing.
"""

from __future__ import annotations

import copy
import json
import shutil
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import requests
from cloudevents.core.bindings.http import HTTPMessage, from_http_event, to_binary_event
from cloudevents.core.v1.event import CloudEvent

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from localmode.kube_api_double import CLAIMS, MAPPINGS, KubeApiDouble, scale_function_rules  # noqa: E402
from localmode.processes import start_function, start_redis, stop, wait_until  # noqa: E402
from localmode.serving_standin import ServiceRuntime, ServingStandIn  # noqa: E402
from scripts.chaos_pool import PoolRow, print_pool_rows  # noqa: E402

NS = "models"
DOMAIN = "example.com"
LABEL = {"predictive-scaling.io/enabled": "true"}
MIN = "autoscaling.knative.dev/min-scale"
RECONCILE_S = 0.5
MINUTE_S = 2.0
TICK_S = 1.0
NOT_READY_S = 180
"""POOL_NOT_READY_SECONDS for the run: three minutes of the scale function's clock (3 ticks)."""
TICK0 = 29_000_000


def host(model: str) -> str:
    return f"{model}.{NS}.{DOMAIN}"


class Traffic:
    """Back-to-back V2 requests to one model's host from `clients` clients, until stopped."""

    def __init__(self, gateway: str, model: str, row: list[float], clients: int = 2):
        self.gateway, self.model = gateway, model
        self.body = {"inputs": [{"name": "input-0", "shape": [1, len(row)], "datatype": "FP64", "data": row}]}
        self.sent = self.lost = self.status_500 = self.status_503 = 0
        self.codes: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _one(self, session: requests.Session) -> None:
        for attempt in range(5):
            try:
                r = session.post(f"{self.gateway}/v2/models/{self.model}/infer", json=self.body,
                                 headers={"Host": host(self.model)}, timeout=60)
                code, wait = str(r.status_code), float(r.headers.get("Retry-After", "1")) / 10
            except requests.RequestException as exc:
                code, wait = type(exc).__name__, 0.2
            with self._lock:
                self.codes[code] = self.codes.get(code, 0) + 1
                self.status_500 += code == "500"
                self.status_503 += code == "503"
            if code == "200":
                return
            if code != "503" and code.isdigit():
                break  # not retryable
            time.sleep(wait)
        with self._lock:
            self.lost += 1

    def _run(self) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            with self._lock:
                self.sent += 1
            self._one(session)
            time.sleep(0.02)

    def __enter__(self) -> "Traffic":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(70)


def minutes(point_rps: float, p_any: float) -> list[dict]:
    return [{"start": "", "point_rps": point_rps, "upper_rps": point_rps * 1.5 + 0.1, "p_any": p_any}] * 5


def forecast_event(tick_minute: int, services: dict[str, tuple[float, float]], event_id: str) -> CloudEvent:
    tick = datetime.fromtimestamp(tick_minute * 60, timezone.utc)
    entries = [{"service": f"{NS}/{name}", "status": "ok", "minutes": minutes(*v)} for name, v in services.items()]
    return CloudEvent(attributes={"type": "io.predictive-scaling.forecast.v1", "source": "/predictive-scaling/forecast",
                                  "id": event_id, "time": tick, "datacontenttype": "application/json"},
                      data={"tick": tick.strftime("%Y-%m-%dT%H:%M:%SZ"), "model": {"version": "chaos"},
                            "services": entries})


class Tiers:
    """The pool, wine's and diabetes' dedicated Services, their mappings, and the scale function."""

    def __init__(self, base: Path, models: Path):
        self.base = base
        repo = base / "tiers-repo"
        repo.mkdir(parents=True)
        manifest = json.loads((models / "manifest.json").read_text())
        entries = [e for e in manifest["artifacts"] if e["format"] == "onnx" and e["name"] in ("wine", "diabetes")]
        for e in entries:
            shutil.copy(models / e["path"], repo / e["path"])
        (repo / "manifest.json").write_text(json.dumps({"artifacts": entries}))
        self.rows = {e["name"]: [float(x) for x in e["example"][0]] for e in entries}
        self.redis = start_redis(base / "tiers-redis")
        self.double = KubeApiDouble(scale_function_rules(ROOT, placement=True), version="1.21", domain=DOMAIN,
                                    mapping_reconcile_s=RECONCILE_S)
        self.standin = ServingStandIn(domain=DOMAIN, mappings=self.double.mapping_target)
        self.gone_at: dict[str, float] = {}
        self.double.on_deleted(self._gone)
        self.double.add_service(NS, "infer-pool", {**LABEL, "predictive-scaling.io/pool": "true"})
        self.double.add_service(NS, "infer-wine", LABEL)
        self.double.add_service(NS, "infer-diabetes", LABEL)
        self.runtimes: dict[str, ServiceRuntime] = {}
        for name, kwargs in (("infer-pool", {"model": None, "repository": repo}),
                             ("infer-wine", {"model": repo / "wine.onnx"}),
                             ("infer-diabetes", {"model": repo / "diabetes.onnx"})):
            revision = f"{name}-00001"
            runtime = ServiceRuntime(
                NS, name, annotations=lambda r=revision: self._annotations(r), minute_s=MINUTE_S, log_dir=base,
                on_ready=lambda n, r=revision: self._replicas(r, n), **kwargs)
            self.standin.add(runtime)
            self.runtimes[name] = runtime
        # wine starts on its own Service (busy), diabetes in the pool (quiet); one model a pod,
        # so that placement by memory keeps wine out of the pool while it is busy
        self.double.add_domain_mapping(NS, host("wine"), "infer-wine", labels={"predictive-scaling.io/model": "wine"},
                                       annotations={"predictive-scaling.io/dedicated-service": "infer-wine"})
        self.double.add_domain_mapping(NS, host("diabetes"), "infer-pool",
                                       labels={"predictive-scaling.io/model": "diabetes"},
                                       annotations={"predictive-scaling.io/dedicated-service": "infer-diabetes"})
        self.scale_url, self._scale = start_function(ROOT / "functions" / "scale", {
            "REDIS_URL": self.redis.url, "KUBERNETES_API_URL": self.double.url, "MAX_FORECAST_AGE_SECONDS": "0",
            "WARMUP_GATEWAY": self.standin.url, "PRELOAD_GATEWAY": self.standin.url,
            "WARMUP_PATH": "/v2/health/ready", "BURST_RISK": "off", "COOLDOWN_SECONDS": "0",
            "PLACEMENT_EVERY_MINUTES": "1", "PLACEMENT_HOLD_MINUTES": "2", "POOL_MODELS_PER_POD": "1",
            "POOL_MODEL_LOAD_MS": "1000",
            "POOL_NOT_READY_SECONDS": str(NOT_READY_S), "LOG_LEVEL": "INFO",
        }, base / "tiers-scale.log")
        self.tick = TICK0
        self.records: list[dict] = []

    def _annotations(self, revision: str) -> dict[str, str]:
        try:
            return self.double.annotations("revisions", NS, revision)
        except KeyError:  # the Service (and its Revisions) deleted
            return {}

    def _replicas(self, revision: str, n: int) -> None:
        try:
            self.double.set_actual_replicas(NS, revision, n)
        except KeyError:
            pass

    def send(self, services: dict[str, tuple[float, float]]) -> dict:
        """One forecast event (a minute of the scale function's clock); its decision data."""
        self.double.settle_watches()
        message = to_binary_event(forecast_event(self.tick, services, f"tiers-{self.tick}"))
        self.tick += 1
        r = requests.post(self.scale_url, data=message.body, headers=message.headers, timeout=60)
        if r.status_code != 200:
            data = {"error": r.status_code, "text": r.text[:300]}
        else:
            data = from_http_event(HTTPMessage(headers=dict(r.headers), body=r.content)).get_data()
        self.records.append(data)
        return data

    def routed_to_nothing(self) -> list[str]:
        """Model hosts whose gateway route reaches no running Service, or that do not answer 200."""
        bad = []
        for model, row in self.rows.items():
            target = self.double.mapping_target(NS, host(model))
            body = {"inputs": [{"name": "input-0", "shape": [1, len(row)], "datatype": "FP64", "data": row}]}
            try:
                ok = requests.post(f"{self.standin.url}/v2/models/{model}/infer", json=body,
                                   headers={"Host": host(model)}, timeout=60).status_code == 200
            except requests.RequestException:
                ok = False
            if target is None or self.standin.host(NS, target) not in self.standin.services or not ok:
                bad.append(f"{model} -> {target}{'' if ok else ' (not answering 200)'}")
        return bad

    def delete_service(self, name: str) -> bool:
        """`kubectl delete ksvc <name>` (background propagation): with no finalizer the Service
        goes at once; with finalizers it carries deletionTimestamp, and Knative leaves it (its
        Route, Revisions, pods) as it is until the last finalizer is removed. When it goes, the
        garbage collector's cascade (`_gone`): its Revisions and PodAutoscalers leave the API and
        its pods the gateway. True when gone at once."""
        return self.double.delete("serving.knative.dev", "services", NS, name)

    def _gone(self, key: tuple) -> None:
        group, plural, namespace, name = key
        if (group, plural, namespace) != ("serving.knative.dev", "services", NS):
            return
        self.gone_at[name] = time.monotonic()
        for group, plural in (("serving.knative.dev", "revisions"), ("autoscaling.internal.knative.dev", "podautoscalers")):
            for key in [k for k in list(self.double.objects) if k[:3] == (group, plural, NS)
                        and k[3].startswith(f"{name}-")]:
                self.double.delete_object(group, plural, NS, key[3])
        runtime = self.standin.services.pop(self.standin.host(NS, name), None)
        if runtime is not None:
            runtime.shutdown()

    def unclaim(self, hostname: str) -> None:
        """The host's ClusterDomainClaim deleted and the mapping re-reconciled (the reconciler's
        resync): DomainClaimed False, Ready False; the programmed route stays in the gateways."""
        double = self.double
        with double._lock:
            double.delete_object(CLAIMS[0], CLAIMS[2], None, hostname)
            key = (MAPPINGS[0], MAPPINGS[2], NS, hostname)
            obj = copy.deepcopy(double.objects[key])
            obj["status"] = double._mapping_status(NS, hostname, obj["spec"]["ref"]["name"],
                                                   obj["metadata"]["generation"])
            double._commit(key, obj)

    def fallback_logged(self) -> bool:
        """The scale function logged an applied fallback move (by its watch, between events)."""
        try:
            lines = (self.base / "tiers-scale.log").read_text().splitlines()
        except OSError:
            return False
        return any('"msg": "move"' in line and '"fallback": true' in line and '"applied": true' in line
                   for line in lines)

    def pool_min_scale(self) -> str | None:
        return self._annotations("infer-pool-00001").get(MIN)

    def close(self) -> None:
        for closer in (lambda: stop(self._scale), self.standin.close, self.double.close, self.redis.stop):
            try:
                closer()
            except Exception:  # noqa: BLE001 - closing must reach every process
                pass


def _placement(data: dict, model: str) -> dict:
    return next((r for r in data.get("placement", []) if r.get("model") == f"{NS}/{model}"), {})


def run_tier_faults(models: Path, base: Path) -> list[PoolRow]:
    tiers = Tiers(base, models)
    rows: list[PoolRow] = []
    try:
        busy = {"wine": (8.0, 1.0), "diabetes": (0.01, 0.05)}
        # -- dedicated Service deleted while its model is routed to it ------------------------
        with Traffic(tiers.standin.url, "wine", tiers.rows["wine"]) as traffic:
            wait_until(lambda: tiers.runtimes["infer-wine"].stats.requests > 20, 120, "infer-wine serving wine")
            for _ in range(3):
                tiers.send(busy)
                time.sleep(TICK_S)
            tiers.delete_service("infer-wine")
            deleted_at = time.monotonic()
            back_after = None
            fallback = None
            for _ in range(60):
                data = tiers.send(busy)
                move = _placement(data, "wine").get("move") or {}
                if move.get("applied") and move.get("fallback"):
                    fallback = "the event's plan"
                elif fallback is None and tiers.fallback_logged():
                    fallback = "the watch"
                if fallback and tiers.double.mapping_target(NS, host("wine")) == "infer-pool" and back_after is None:
                    back_after = time.monotonic() - deleted_at
                if back_after is not None and "infer-wine" in tiers.gone_at:
                    break
                time.sleep(TICK_S)
            time.sleep(3)  # requests after the route's return and the Service's removal
        nothing = tiers.routed_to_nothing()
        gone_after = tiers.gone_at["infer-wine"] - deleted_at if "infer-wine" in tiers.gone_at else None
        note = (f"back in the pool {back_after:.1f} s after the deletion (fallback move by {fallback}, counted)"
                if back_after else "NOT moved back to the pool within 60 ticks")
        note += (f"; the Service gone {gone_after:.1f} s after the deletion (held by its finalizer until then)"
                 if gone_after is not None else "; the Service NOT gone (its finalizer never released)")
        note += f"; codes {dict(sorted(traffic.codes.items()))}"
        if nothing:
            note += f"; routed to nothing: {', '.join(nothing)}"
        rows.append(PoolRow("dedicated Service deleted while its model is routed to it", traffic.sent, traffic.lost,
                            traffic.status_500, traffic.status_503, None, None, note, len(nothing),
                            back_after is None or gone_after is None))
        print(f"  {rows[-1].fault}: done", file=sys.stderr, flush=True)

        # -- mapping stuck not Ready --------------------------------------------------------
        quiet = {"wine": (0.0, 0.0), "diabetes": (0.0, 0.0)}
        with Traffic(tiers.standin.url, "diabetes", tiers.rows["diabetes"], clients=1) as traffic:
            time.sleep(2)
            tiers.unclaim(host("diabetes"))
            stuck_tick = tiers.tick
            held, released_at, reported = [], None, None
            for _ in range(NOT_READY_S // 60 + 6):
                data = tiers.send(quiet)
                pool = next((r for r in data.get("placement", []) if r.get("pool")), {})
                ms = tiers.pool_min_scale()
                held.append((tiers.tick - 1 - stuck_tick, pool.get("floor"), ms))
                if reported is None and "diabetes" in (pool.get("not_ready") or []):
                    reported = tiers.tick - 1 - stuck_tick
                if released_at is None and reported is not None and ms in (None, "0"):
                    released_at = tiers.tick - 1 - stuck_tick
                time.sleep(TICK_S)
        nothing = tiers.routed_to_nothing()
        floors = " ".join(f"{m}:{f}/{s}" for m, f, s in held)
        note = (f"reported not Ready at minute {reported}, pool min-scale 0 at minute {released_at} "
                f"(bound {NOT_READY_S // 60} min)" if reported is not None and released_at is not None
                else f"NOT released: reported {reported}, released {released_at}")
        note += f"; minute:floor/min-scale {floors}"
        if nothing:
            note += f"; routed to nothing: {', '.join(nothing)}"
        rows.append(PoolRow("mapping stuck not Ready", traffic.sent, traffic.lost, traffic.status_500,
                            traffic.status_503, None, None, note, len(nothing), released_at is None))
        print(f"  {rows[-1].fault}: done", file=sys.stderr, flush=True)
    finally:
        (base / "tiers-records.json").write_text(json.dumps(tiers.records, default=str))
        tiers.close()
    return rows


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory(prefix="chaos-tiers-") as tmp:
        ok = print_pool_rows(run_tier_faults(ROOT / "models", Path(tmp)))
        if "--keep" in sys.argv:
            shutil.copytree(tmp, ROOT / "reports" / "chaos-tiers", dirs_exist_ok=True)
    print("\ntier guarantees held" if ok else "\ntier guarantees broken")
    sys.exit(0 if ok else 1)
