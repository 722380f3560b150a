"""The pool plan as deployed, over real HTTP: the scale function under func-python, its real
`kubernetes` client against the API double, real Redis, and the real multi-model server as the
pool. Knative's keep-alive written and restored in place (Revision on >= 1.21, PodAutoscaler on
<= 1.20); a recorded forecast sequence replayed through the function and through the fleet
backtest's driver gives the same tiers, annotations and moves; no URL routed to nothing."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest
import requests

from localmode.kube_api_double import KubeApiDouble, scale_function_rules
from localmode.processes import free_port, wait_until
from tests.scale.conftest import LABEL, TICK0, decisions, minutes, send
from tests.support.manifests import crd_schemas
from tests.support.servers import ROOT

NS = "models"
POOL_LABELS = {**LABEL, "predictive-scaling.io/pool": "true"}
MIN_SCALE = "autoscaling.knative.dev/min-scale"
RETENTION = "autoscaling.knative.dev/scale-to-zero-pod-retention-period"
CE_TYPE = "io.predictive-scaling.forecast.v1"


def event(tick_minute: int, services: dict[str, list[dict] | str], event_id: str,
          observed: dict[str, list[float]] | None = None):
    """A forecast event as the forecast function replies it, with the `observed` block: each
    model's requests in the minutes before the tick."""
    from cloudevents.core.v1.event import CloudEvent

    entries = []
    for name, value in services.items():
        entry = ({"service": name, "status": "no-data", "reason": value} if isinstance(value, str)
                 else {"service": name, "status": "ok", "minutes": value})
        if observed and name in observed:
            counts = observed[name]
            start = datetime.fromtimestamp((tick_minute - len(counts)) * 60, timezone.utc)
            entry["observed"] = {"start": start.strftime("%Y-%m-%dT%H:%M:%SZ"), "requests": counts}
        entries.append(entry)
    tick = datetime.fromtimestamp(tick_minute * 60, timezone.utc)
    return CloudEvent(attributes={"type": CE_TYPE, "source": "/predictive-scaling/forecast", "id": event_id,
                                  "time": tick, "datacontenttype": "application/json"},
                      data={"tick": tick.strftime("%Y-%m-%dT%H:%M:%SZ"), "model": {"version": "test"},
                            "services": entries})


def setup_pool(double: KubeApiDouble, routed: dict[str, str], pool_url: str | None = None,
               pool_template: dict[str, str] | None = None) -> None:
    double.add_service(NS, "infer-pool", POOL_LABELS, template_annotations=pool_template)
    if pool_url:
        with double._lock:
            double.objects[("serving.knative.dev", "services", NS, "infer-pool")]["status"]["url"] = pool_url
    for model, tier in routed.items():
        double.add_service(NS, f"infer-{model}", LABEL)
        double.add_domain_mapping(NS, f"{model}.{NS}.example.com", "infer-pool" if tier == "pool" else f"infer-{model}",
                                  labels={"predictive-scaling.io/model": model},
                                  annotations={"predictive-scaling.io/dedicated-service": f"infer-{model}"})


def target_annotations(double: KubeApiDouble, revision: str, legacy: bool) -> dict[str, str]:
    return double.annotations("podautoscalers" if legacy else "revisions", NS, revision)


def pool_record(data: dict) -> dict:
    return next(r for r in data["placement"] if "pool" in r)


# -- Knative's keep-alive, in place ------------------------------------------------------------------
@pytest.mark.parametrize("version", ["1.21", "1.20"])
def test_the_pools_keep_alive_is_knatives_retention_written_and_restored_in_place(scale_fn, version):
    legacy = version == "1.20"
    double = KubeApiDouble(scale_function_rules(ROOT, legacy=legacy, placement=True), version=version,
                           schemas=crd_schemas())
    try:
        # the pool manifest's static default (serving/pool/infer-pool.yaml) is on its Revision
        setup_pool(double, {"wine": "pool", "diabetes": "pool"}, pool_template={RETENTION: "30s"})
        fn = scale_fn(double, POOL_WARMTH_EVERY_MINUTES="30", POOL_HISTORY_MINUTES="60", COOLDOWN_SECONDS="0")
        quiet = minutes(0.0, 0.0)  # the forecast sees nothing coming: only a keep-alive can catch these
        first = TICK0 + (30 - TICK0 % 30) - 20  # 20 minutes of history before the choice
        for t in range(first, first + 20):
            data = decisions(send(fn, event(t, {"models/wine": quiet, "models/diabetes": quiet}, f"k-{t}",
                                            {"models/wine": [1.0 if (t - 1) % 3 == 0 else 0.0], "models/diabetes": [0.0]})))
            assert pool_record(data)["warmth"] == "forecast cost=300"  # no history yet: the user's price
        assert target_annotations(double, "infer-pool-00001", legacy)[RETENTION] == "30s"  # untouched so far
        # the choice is due: a request every 3 minutes, so a 2-minute keep-alive is the cheapest on the history
        t = first + 20
        data = decisions(send(fn, event(t, {"models/wine": quiet, "models/diabetes": quiet}, "k-choice",
                                        {"models/wine": [0.0], "models/diabetes": [0.0]})))
        record = pool_record(data)
        assert record["warmth"] == "keepalive 2 min" and record["retention"] == "120s", record
        assert target_annotations(double, "infer-pool-00001", legacy)[RETENTION] == "120s"
        patches = [c for c in double.calls("PATCH") if RETENTION in ((c.body.get("metadata") or {}).get("annotations") or {})]
        assert [c.resource for c in patches] == ["podautoscalers" if legacy else "revisions"]
        assert not double.calls("PATCH", "services") and not double.calls("PUT")  # in place: no new Revision
        # written once: the next tick finds it there and writes nothing
        decisions(send(fn, event(t + 1, {"models/wine": quiet, "models/diabetes": quiet}, "k-again")))
        assert len([c for c in double.calls("PATCH") if RETENTION in str(c.body)]) == 1
        # an hour of silence later the history says the keep-alive no longer pays: the template's value is back
        later = t + 60 if (t + 60) % 30 == 0 else t + 60 + (30 - (t + 60) % 30)
        data = decisions(send(fn, event(later, {"models/wine": quiet, "models/diabetes": quiet}, "k-quiet",
                                        {"models/wine": [0.0] * 5, "models/diabetes": [0.0] * 5})))
        assert pool_record(data)["retention"] == "30s" and pool_record(data)["warmth"].startswith("forecast")
        assert target_annotations(double, "infer-pool-00001", legacy)[RETENTION] == "30s"
    finally:
        double.close()


def test_the_double_refuses_a_retention_beyond_an_hour_as_the_webhook_does(fleet_double):
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    setup_pool(fleet_double, {"wine": "pool"})
    api = client.CustomObjectsApi(client.ApiClient(client.Configuration(host=fleet_double.url)))
    args = ("serving.knative.dev", "v1", NS, "revisions", "infer-pool-00001")
    with pytest.raises(ApiException) as denied:
        api.patch_namespaced_custom_object(*args, {"metadata": {"annotations": {RETENTION: "2h"}}})
    assert denied.value.status == 400
    api.patch_namespaced_custom_object(*args, {"metadata": {"annotations": {RETENTION: "3600s"}}})


@pytest.fixture
def fleet_double():
    double = KubeApiDouble(scale_function_rules(ROOT, placement=True), version="1.21", schemas=crd_schemas())
    yield double
    double.close()


# -- no URL routed to nothing ------------------------------------------------------------------
def test_a_model_whose_dedicated_service_is_deleted_goes_back_to_the_pool(fleet_double, scale_fn, pool_server):
    setup_pool(fleet_double, {"wine": "dedicated"}, pool_url=pool_server.url)
    fleet_double.set_actual_replicas(NS, "infer-pool-00001", 1)
    port = free_port()
    # API_READS=list: no watch, so the next event's plan is what moves the route (with the watch,
    # route_guard.py may be first: test_a_dedicated_service_going_between_events_...)
    fn = scale_fn(fleet_double, PRELOAD_GATEWAY=pool_server.control_url, PLACEMENT_EVERY_MINUTES="1", COOLDOWN_SECONDS="0",
                  METRICS_PORT=str(port), METRICS_ADDRESS="127.0.0.1", API_READS="list")
    busy = minutes(9, 1.0, point_rps=8)
    decisions(send(fn, event(TICK0, {"models/wine": busy}, "d-0")))
    assert fleet_double.mapping_target(NS, "wine.models.example.com") == "infer-wine"
    # the operator deletes the dedicated Service: Knative marks the mapping not Ready (the ref
    # does not resolve), so the old code waited for it to settle, forever
    fleet_double.delete_object("serving.knative.dev", "services", NS, "infer-wine")
    fleet_double.set_conditions("serving.knative.dev", "domainmappings", NS, "wine.models.example.com",
                                [{"type": "Ready", "status": "False", "reason": "DomainMappingResolveFailed"}])
    data = decisions(send(fn, event(TICK0 + 1, {"models/wine": busy}, "d-1")))
    record = next(r for r in data["placement"] if r.get("model") == f"{NS}/wine")
    assert record["decided"] == "pool" and record["action"] == "move", record
    assert record["move"]["applied"] is True and record["move"]["fallback"] is True
    assert "gone" in record["reason"]
    assert fleet_double.get("serving.knative.dev", "domainmappings", NS, "wine.models.example.com")["spec"]["ref"]["name"] \
        == "infer-pool"
    assert pool_server.ready("wine")  # loaded before the route moved: the first request is warm
    # counted and logged
    metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert 'scale_placement_fallbacks_total{namespace="models"} 1.0' in metrics
    assert any('"fallback": true' in line and '"msg": "move"' in line for line in fn.log_lines()), fn.log_lines()[-5:]


def test_a_dedicated_service_deleted_while_routed_to_serves_until_its_model_is_back_in_the_pool(
        fleet_double, scale_fn, pool_server):
    setup_pool(fleet_double, {"wine": "dedicated"}, pool_url=pool_server.url)
    fleet_double.set_actual_replicas(NS, "infer-pool-00001", 1)
    fn = scale_fn(fleet_double, PRELOAD_GATEWAY=pool_server.control_url, PLACEMENT_EVERY_MINUTES="1",
                  COOLDOWN_SECONDS="0", API_READS="list")  # the events' plan alone (no watch)
    busy = minutes(9, 1.0, point_rps=8)
    decisions(send(fn, event(TICK0, {"models/wine": busy}, "h-0")))
    service = ("serving.knative.dev", "services", NS, "infer-wine")
    assert "predictive-scaling.io/routed" in fleet_double.get(*service)["metadata"]["finalizers"]
    # `kubectl delete ksvc infer-wine`: the finalizer holds it (and Knative leaves its Route and
    # pods as they are), so wine's host still reaches a pod
    assert fleet_double.delete(*service) is False
    assert fleet_double.get(*service)["metadata"].get("deletionTimestamp")
    data = decisions(send(fn, event(TICK0 + 1, {"models/wine": busy}, "h-1")))
    record = next(r for r in data["placement"] if r.get("model") == f"{NS}/wine")
    assert record["preload"] == {"outcome": "loaded"} and pool_server.ready("wine")  # loaded before the move
    assert record["move"]["applied"] is True and record["move"]["fallback"] is True, record
    assert fleet_double.mapping_target(NS, "wine.models.example.com") == "infer-pool"
    assert service in fleet_double.objects  # held while the move is in flight
    decisions(send(fn, event(TICK0 + 2, {"models/wine": busy}, "h-2")))
    assert service not in fleet_double.objects  # released once the route is programmed in the pool
    assert any('"msg": "deletion hold"' in line and '"released"' in line for line in fn.log_lines())


@pytest.mark.parametrize("held", [True, False])
def test_a_dedicated_service_going_between_events_sends_its_model_back_at_once(fleet_double, scale_fn, pool_server, held):
    """No forecast event after the deletion: the watch-fed cache's event moves the route (held:
    the finalizer kept the Service serving, and is released once the route is programmed; not
    held, e.g. a foreground cascade: the route reached nothing, and moves without waiting)."""
    setup_pool(fleet_double, {"wine": "dedicated"}, pool_url=pool_server.url)
    fleet_double.set_actual_replicas(NS, "infer-pool-00001", 1)
    fn = scale_fn(fleet_double, PRELOAD_GATEWAY=pool_server.control_url, PLACEMENT_EVERY_MINUTES="1",
                  COOLDOWN_SECONDS="0")
    decisions(send(fn, event(TICK0, {"models/wine": minutes(9, 1.0, point_rps=8)}, "g-0")))
    service = ("serving.knative.dev", "services", NS, "infer-wine")
    assert fleet_double.mapping_target(NS, "wine.models.example.com") == "infer-wine"
    if held:
        assert fleet_double.delete(*service) is False
    else:
        fleet_double.delete_object(*service)
    wait_until(lambda: fleet_double.mapping_target(NS, "wine.models.example.com") == "infer-pool"
               and service not in fleet_double.objects, 20, "wine routed to the pool and infer-wine gone")
    assert pool_server.ready("wine") is held  # a held Service's move waits for the load
    moves = [line for line in fn.log_lines() if '"msg": "move"' in line and '"trigger": "watch"' in line]
    assert len(moves) == 1 and '"fallback": true' in moves[0], moves


def test_a_dry_run_pool_holds_no_deletion(fleet_double, scale_fn, pool_server):
    # a finalizer left from a real run: in dry run the function moves no route, so a deleted
    # Service must not wait on it
    setup_pool(fleet_double, {"wine": "dedicated"}, pool_url=pool_server.url)
    service = ("serving.knative.dev", "services", NS, "infer-wine")
    with fleet_double._lock:
        fleet_double.objects[service]["metadata"]["finalizers"] = ["predictive-scaling.io/routed"]
    assert fleet_double.delete(*service) is False
    fn = scale_fn(fleet_double, PRELOAD_GATEWAY=pool_server.control_url, COOLDOWN_SECONDS="0", DRY_RUN="true")
    decisions(send(fn, event(TICK0, {"models/wine": minutes(9, 1.0, point_rps=8)}, "dry-0")))
    assert service not in fleet_double.objects
    assert fleet_double.mapping_target(NS, "wine.models.example.com") == "infer-wine"  # no route moved


def test_a_namespace_without_a_pool_any_more_holds_no_deletion(fleet_double, scale_fn):
    # the pool Service removed (or a second one added: placement off): a finalizer left from when
    # placement ran must not keep a deleted Service waiting
    fleet_double.add_service(NS, "infer-wine", LABEL)
    service = ("serving.knative.dev", "services", NS, "infer-wine")
    with fleet_double._lock:
        fleet_double.objects[service]["metadata"]["finalizers"] = ["predictive-scaling.io/routed", "someone.else/keep"]
    fn = scale_fn(fleet_double, COOLDOWN_SECONDS="0")
    decisions(send(fn, event(TICK0, {"models/infer-wine": minutes(1, 0.5)}, "np-0")))
    assert fleet_double.get(*service)["metadata"]["finalizers"] == ["someone.else/keep"]  # ours only


def test_a_mapping_stuck_not_ready_stops_holding_the_pool_warm_after_the_bound(fleet_double, scale_fn):
    setup_pool(fleet_double, {"wine": "pool"})
    fleet_double.set_actual_replicas(NS, "infer-pool-00001", 1)
    fn = scale_fn(fleet_double, POOL_NOT_READY_SECONDS="120", COOLDOWN_SECONDS="0", PLACEMENT_EVERY_MINUTES="1")
    decisions(send(fn, event(TICK0, {"models/wine": minutes(6, 1.0, point_rps=3)}, "s-0")))
    assert int(fleet_double.annotations("revisions", NS, "infer-pool-00001")[MIN_SCALE]) == 1
    # a missing domain claim: the mapping never becomes Ready
    fleet_double.set_conditions("serving.knative.dev", "domainmappings", NS, "wine.models.example.com",
                                [{"type": "Ready", "status": "False", "reason": "DomainClaimConflict"}])
    idle = minutes(0.0, 0.0)
    for i, t in enumerate(range(TICK0 + 1, TICK0 + 3)):  # within the bound: held at what the pool has
        data = decisions(send(fn, event(t, {"models/wine": idle}, f"s-{t}")))
        assert int(fleet_double.annotations("revisions", NS, "infer-pool-00001")[MIN_SCALE]) == 1
        assert pool_record(data)["not_ready"] == []
    data = decisions(send(fn, event(TICK0 + 4, {"models/wine": idle}, "s-late")))  # 180 s > 120 s
    assert pool_record(data)["not_ready"] == ["wine"]
    record = next(r for r in data["placement"] if r.get("model") == f"{NS}/wine")
    assert record["not_ready"] is True and "not Ready for" in record["reason"]
    assert int(fleet_double.annotations("revisions", NS, "infer-pool-00001")[MIN_SCALE]) == 0  # no longer held


# -- the same decisions: the function over HTTP, and the backtest's driver ------------------------------------
def recorded_sequence(n: int = 50, seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Two models' forecasts (req/min, horizon 2) and requests: wine busy for its first quarter
    hour (it gets its own Service, and comes back once its hour's mean is low), diabetes sparse."""
    rng = np.random.default_rng(seed)
    point = np.zeros((2, n, 2), np.float32)
    point[0] = 60.0 * np.where(np.arange(n) < 15, 8.0, 0.5)[:, None]
    point[1] = 30.0
    upper = (point * 1.25).astype(np.float32)
    p_any = np.where(rng.random((2, n, 2)) < 0.6, 0.9, 0.1).astype(np.float32)
    counts = (rng.random((2, n)) < 0.4).astype(np.float64) * rng.integers(1, 4, (2, n))
    return point, upper, p_any, counts


def test_the_function_and_the_backtest_driver_take_the_same_decisions(fleet_double, scale_fn, pool_server):
    from scale.min_scale_policy import PolicySettings
    from scale.placement import PlacementSettings
    from scale.pool_plan import PoolPlanSettings

    from training.fleet_backtest import FleetOptions, Forecasts, PoolPlanDriver

    point, upper, p_any, counts = recorded_sequence()
    n = point.shape[1]
    names = ["wine", "diabetes"]
    setup_pool(fleet_double, {m: "pool" for m in names}, pool_url=pool_server.url)
    fleet_double.set_actual_replicas(NS, "infer-pool-00001", 1)
    # a dedicated Service's pods are ready a minute after its min-scale is raised (a cold start is
    # seconds), as the driver takes them: a move out waits for them. One model a pod and a second
    # a load: the pool's pods would spend most of their time loading while wine is busy
    env = {"PLACEMENT_EVERY_MINUTES": "1", "PLACEMENT_HOLD_MINUTES": "3", "COOLDOWN_SECONDS": "0",
           "POOL_MODELS_PER_POD": "1", "POOL_MODEL_LOAD_MS": "1000", "POOL_WARMTH_EVERY_MINUTES": "10", "POOL_HISTORY_MINUTES": "60",
           "MAX_SCALE": "10", "PRELOAD_GATEWAY": pool_server.control_url}
    fn = scale_fn(fleet_double, **env)
    start = TICK0 - TICK0 % 10 + 3
    function_side = []
    for m in range(n):
        services = {f"models/{name}": [{"start": "", "point_rps": float((point[i, m] / 60.0)[h]),
                                        "upper_rps": float((upper[i, m] / 60.0)[h]), "p_any": float(p_any[i, m, h])}
                                       for h in range(2)] for i, name in enumerate(names)}
        observed = {f"models/{name}": [float(counts[i, m - 1])] for i, name in enumerate(names)} if m else None
        data = decisions(send(fn, event(start + m, services, f"same-{m}", observed)))
        record = pool_record(data)
        function_side.append({
            "tiers": tuple(fleet_double.mapping_target(NS, f"{name}.{NS}.example.com") == "infer-pool" for name in names),
            "pool": int(fleet_double.annotations("revisions", NS, "infer-pool-00001").get(MIN_SCALE, "0")),
            "retention": fleet_double.annotations("revisions", NS, "infer-pool-00001").get(RETENTION),
            "dedicated": tuple(int(fleet_double.annotations("revisions", NS, f"infer-{name}-00001").get(MIN_SCALE, "0"))
                               for name in names),
            "dedicated_retention": tuple(fleet_double.annotations("revisions", NS, f"infer-{name}-00001").get(RETENTION)
                                         for name in names),
            "warmth": record["warmth"],
        })
        for name, replicas in zip(names, function_side[-1]["dedicated"]):
            fleet_double.set_actual_replicas(NS, f"infer-{name}-00001", replicas)
    settings = PoolPlanSettings(placement=PlacementSettings(capacity_rps=10.0, hold_minutes=3), every_minutes=1,
                                choose_every_minutes=10, history_minutes=60)
    options = FleetOptions(capacity_rps=10.0, max_scale=10, models_per_pod=1, model_load_ms=1000.0)
    policy = PolicySettings(capacity_rps=10.0, max_scale=10, cooldown_s=0.0, burst_risk=None)
    driver = PoolPlanDriver(counts, Forecasts(point, upper, p_any), names, [settings], options, start, policy)
    member = driver(0, n)
    backtest_side = [{"tiers": tuple(bool(member[i, m]) for i in range(2)), "pool": int(driver.pool_min[0][m]),
                      "retention": f"{driver.pool_keep[0][m]}s" if driver.pool_keep[0][m] else None,
                      "dedicated": tuple(int(driver.ded_min[0][i, m]) for i in range(2)),
                      "dedicated_retention": tuple(f"{driver.ded_keep[0][i, m]}s" if driver.ded_keep[0][i, m] else None
                                                   for i in range(2)),
                      "warmth": driver.warmth[0][m]} for m in range(n)]
    assert function_side == backtest_side
    # and the sequence exercised what it is for: a move out and back, both tiers warm at some point
    assert {s["tiers"] for s in function_side} >= {(True, True), (False, True)}
    assert max(s["dedicated"][0] for s in function_side) >= 1 and max(s["pool"] for s in function_side) >= 1
    assert driver.moves >= 2


@pytest.mark.parametrize("observed", [{"start": "2025-02-19T09:20:30Z", "requests": [1]}, {"start": "x", "requests": [1]},
                                      {"start": "2025-02-19T09:20:00Z", "requests": [-1]},
                                      {"start": "2025-02-19T09:20:00Z", "requests": [0] * 61}])
def test_a_malformed_observed_block_is_a_400(fleet_double, scale_fn, observed):
    setup_pool(fleet_double, {"wine": "pool"})
    fn = scale_fn(fleet_double)
    bad = event(TICK0, {"models/wine": minutes(1.0, 0.5)}, "bad-observed")
    data = bad.get_data()
    data["services"][0]["observed"] = observed
    response = send(fn, bad)
    assert response.status_code == 400 and "observed" in response.text


def test_an_observed_block_on_the_events_own_minutes_is_accepted_where_local_mode_compresses_time():
    """Local mode (MINUTE_SECONDS=1 or 2) sends minutes that are not whole UTC minutes: the block
    is checked against the event's own minute length, so the loop is not dead-lettered there."""
    from cloudevents.core.v1.event import CloudEvent

    from scale.events import BadEvent, parse_forecast

    def event_with(spacing_s: int, observed_start: str) -> CloudEvent:
        starts = [f"2026-12-07T03:35:{16 + spacing_s * k:02d}Z" for k in range(3)]
        return CloudEvent(attributes={"type": "io.predictive-scaling.forecast.v1", "source": "/predictive-scaling/forecast",
                                      "id": "compressed"},
                          data={"tick": "2026-12-07T03:35:16Z", "services": [{
                              "service": "models/wine", "status": "ok",
                              "minutes": [{"start": s, "point_rps": 0.1, "upper_rps": 0.2, "p_any": 0.1} for s in starts],
                              "observed": {"start": observed_start, "requests": [1, 0]}}]})

    parsed = parse_forecast(event_with(1, "2026-12-07T03:35:11Z"))
    assert parsed.services[0].observed == (int(datetime(2026, 12, 7, 3, 35, 11, tzinfo=timezone.utc).timestamp()) // 60,
                                           (1.0, 0.0))
    parse_forecast(event_with(2, "2026-12-07T03:35:12Z"))
    with pytest.raises(BadEvent):  # off the event's own 2-second minutes
        parse_forecast(event_with(2, "2026-12-07T03:35:11Z"))
