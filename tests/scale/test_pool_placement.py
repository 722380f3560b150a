"""The scale function places models between the pool and their dedicated Services, over real HTTP:
its real `kubernetes` client against the API double (DomainMappings with generation, status and
the CRD schema; the RBAC of serving/ and serving/pool/), real Redis, and the real multi-model
server as the pool for pre-loads. A move happens only onto a ready target, after the hold, in one
patch of the model's DomainMapping; dry-run writes nothing; API faults hold the route."""

from __future__ import annotations

import pytest
import requests

from localmode.kube_api_double import KubeApiDouble, scale_function_rules
from tests.scale.conftest import LABEL, TICK0, decisions, forecast, minutes, send
from tests.support.manifests import crd_schemas
from tests.support.servers import ROOT

NS = "models"
POOL_LABELS = {**LABEL, "predictive-scaling.io/pool": "true"}
MIN_SCALE = "autoscaling.knative.dev/min-scale"
PLACEMENT_ENV = {"PLACEMENT_EVERY_MINUTES": "1", "PLACEMENT_HOLD_MINUTES": "3", "COOLDOWN_SECONDS": "0"}
# Placement by memory: a busy model leaves the pool only when the pool cannot hold its working set.
# These tests crowd it: a pool pod holds one model, a load takes it a second (its pods would spend
# most of their time loading), and a pooled neighbour (iris) is active too.
CROWDED = {**PLACEMENT_ENV, "POOL_MODELS_PER_POD": "1", "POOL_MODEL_LOAD_MS": "1000"}
NEIGHBOUR = {"models/iris": minutes(2, 1.0, point_rps=1)}


@pytest.fixture
def fleet_double():
    double = KubeApiDouble(scale_function_rules(ROOT, placement=True), version="1.21", schemas=crd_schemas())
    yield double
    double.close()


def setup_fleet(double: KubeApiDouble, routed: dict[str, str], pool_url: str | None = None) -> None:
    """The pool, a dedicated Service per model, a DomainMapping per model routed as `routed` says."""
    double.add_service(NS, "infer-pool", POOL_LABELS)
    if pool_url:
        with double._lock:
            double.objects[("serving.knative.dev", "services", NS, "infer-pool")]["status"]["url"] = pool_url
    for model, tier in routed.items():
        double.add_service(NS, f"infer-{model}", LABEL)
        double.add_domain_mapping(NS, f"{model}.{NS}.example.com", "infer-pool" if tier == "pool" else f"infer-{model}",
                                  labels={"predictive-scaling.io/model": model},
                                  annotations={"predictive-scaling.io/dedicated-service": f"infer-{model}"})


def mapping_patches(double: KubeApiDouble) -> list:
    return [c for c in double.calls("PATCH", "domainmappings")]


def placement_of(data: dict, model: str) -> dict:
    (record,) = [r for r in data.get("placement", []) if r.get("model") == f"{NS}/{model}"]
    return record


def min_scale(double: KubeApiDouble, service: str) -> int:
    return int(double.annotations("revisions", NS, f"{service}-00001").get(MIN_SCALE, "0"))


def test_a_busy_model_moves_to_its_dedicated_service_only_after_the_hold_and_once_it_is_ready(fleet_double, scale_fn):
    setup_fleet(fleet_double, {"wine": "pool", "iris": "pool"})
    fn = scale_fn(fleet_double, **CROWDED)
    busy = {**NEIGHBOUR, "models/wine": minutes(9, 1.0, point_rps=8)}  # 8 req/s expected: above 0.7 x 10 req/s
    for i in range(3):  # the hold: 3 minutes leaning towards dedicated, no move, no preparation
        data = decisions(send(fn, forecast(TICK0 + i, busy, f"busy-{i}")))
        record = placement_of(data, "wine")
        assert record["decided"] == "pool" and record["action"] == "stay", record
        assert record["leaning_since"] == (TICK0) * 60
    assert not mapping_patches(fleet_double) and min_scale(fleet_double, "infer-wine") == 0
    # hold over: dedicated decided, but infer-wine has no ready pod yet: warm it, keep the route
    data = decisions(send(fn, forecast(TICK0 + 3, busy, "busy-3")))
    record = placement_of(data, "wine")
    assert record["decided"] == "dedicated" and record["action"] == "prepare", record
    assert record["move"]["applied"] is False and "waiting for infer-wine" in record["move"]["reason"]
    assert min_scale(fleet_double, "infer-wine") >= 1
    assert not mapping_patches(fleet_double)
    assert fleet_double.mapping_target(NS, "wine.models.example.com") == "infer-pool"
    # the pool keeps serving the model meanwhile: its summed forecast still holds wine's load
    assert min_scale(fleet_double, "infer-pool") >= 1
    # the dedicated Service's pod becomes ready: the next tick moves, in one patch of spec.ref
    fleet_double.set_actual_replicas(NS, "infer-wine-00001", 1)
    data = decisions(send(fn, forecast(TICK0 + 4, busy, "busy-4")))
    record = placement_of(data, "wine")
    assert record["action"] == "move" and record["move"]["applied"] is True, record
    (patch,) = mapping_patches(fleet_double)
    assert patch.body["spec"] == {"ref": {"name": "infer-wine"}} and patch.body["metadata"]["resourceVersion"]
    assert fleet_double.mapping_target(NS, "wine.models.example.com") == "infer-wine"
    # hysteresis: a dip under the dedicate rate but above the pool rate (3.5 req/s) stays dedicated,
    # and so does a drop under it shorter than the hold
    for i, rate in enumerate([5, 5, 1, 1]):
        data = decisions(send(fn, forecast(TICK0 + 5 + i, {**NEIGHBOUR, "models/wine": minutes(rate, 1.0, point_rps=rate)},
                                           f"dip-{i}")))
        assert placement_of(data, "wine")["decided"] == "dedicated"
    assert len(mapping_patches(fleet_double)) == 1  # no flap
    assert fleet_double.mapping_target(NS, "wine.models.example.com") == "infer-wine"


def test_the_pool_is_sized_from_its_models_summed_forecast(fleet_double, scale_fn):
    setup_fleet(fleet_double, {"wine": "pool", "diabetes": "pool"})
    fn = scale_fn(fleet_double, **PLACEMENT_ENV)
    data = decisions(send(fn, forecast(TICK0, {"models/wine": minutes(6, 1.0, point_rps=3),
                                               "models/diabetes": minutes(6, 1.0, point_rps=3)}, "sum-1")))
    # 6 + 6 req/s upper at 10 req/s per pod: two pods for the pool, none for the dedicated ones
    assert min_scale(fleet_double, "infer-pool") == 2
    assert min_scale(fleet_double, "infer-wine") == 0 and min_scale(fleet_double, "infer-diabetes") == 0
    pool = [r for r in data["placement"] if "pool" in r][0]
    assert pool["models"] == ["diabetes", "wine"] and pool["without_forecast"] == []
    assert not [s for s in data["skipped"] if s["service"] in ("models/wine", "models/diabetes")]
    # one model without data: the pool may not be lowered on the other's idle forecast
    data = decisions(send(fn, forecast(TICK0 + 1, {"models/wine": minutes(0, 0.0),
                                                   "models/diabetes": "stale: no data"}, "sum-2")))
    assert min_scale(fleet_double, "infer-pool") == 2
    assert [r for r in data["placement"] if "pool" in r][0]["without_forecast"] == ["diabetes"]
    # both idle, with data: it goes down
    decisions(send(fn, forecast(TICK0 + 2, {"models/wine": minutes(0, 0.0), "models/diabetes": minutes(0, 0.0)},
                                "sum-3")))
    assert min_scale(fleet_double, "infer-pool") == 0


def test_dry_run_decides_and_reports_placement_but_writes_nothing(fleet_double, scale_fn, pool_server):
    setup_fleet(fleet_double, {"wine": "pool", "diabetes": "dedicated"}, pool_url=pool_server.url)
    fleet_double.set_actual_replicas(NS, "infer-pool-00001", 1)
    fleet_double.set_actual_replicas(NS, "infer-wine-00001", 1)
    fn = scale_fn(fleet_double, DRY_RUN="true", PRELOAD_GATEWAY=pool_server.control_url, **CROWDED)
    busy, quiet = minutes(9, 1.0, point_rps=8), minutes(1, 1.0, point_rps=1)
    for i in range(5):
        data = decisions(send(fn, forecast(TICK0 + i, {"models/wine": busy, "models/diabetes": quiet}, f"dry-{i}")))
    wine, diabetes = placement_of(data, "wine"), placement_of(data, "diabetes")
    assert wine["decided"] == "dedicated" and wine["move"]["applied"] is False
    assert "dry run" in wine["move"]["reason"]
    assert diabetes["decided"] == "pool" and diabetes["preload"]["outcome"] == "dry_run"
    assert [c for c in fleet_double.requests if c.method in ("PATCH", "PUT", "POST", "DELETE")] == []
    assert fleet_double.mapping_target(NS, "wine.models.example.com") == "infer-pool"
    assert not pool_server.ready("diabetes")  # no pre-load reached the pool


def test_a_quiet_model_moves_back_to_the_pool_only_once_the_pool_has_it_loaded(fleet_double, scale_fn, pool_server):
    setup_fleet(fleet_double, {"diabetes": "dedicated"}, pool_url=pool_server.url)
    fleet_double.set_actual_replicas(NS, "infer-diabetes-00001", 1)
    fn = scale_fn(fleet_double, PRELOAD_GATEWAY=pool_server.control_url, **PLACEMENT_ENV)
    quiet = minutes(1, 1.0, point_rps=1)  # 1 req/s: under 0.35 x 10
    for i in range(3):
        data = decisions(send(fn, forecast(TICK0 + i, {"models/diabetes": quiet}, f"quiet-{i}")))
        assert placement_of(data, "diabetes")["decided"] == "dedicated"
    # hold over, pool at zero: it is raised (a pod to load the model in), the route stays
    data = decisions(send(fn, forecast(TICK0 + 3, {"models/diabetes": quiet}, "quiet-3")))
    record = placement_of(data, "diabetes")
    assert record["decided"] == "pool" and record["action"] == "prepare", record
    assert record["preload"]["outcome"] == "deferred"
    assert min_scale(fleet_double, "infer-pool") >= 1 and not mapping_patches(fleet_double)
    assert min_scale(fleet_double, "infer-diabetes") >= 1  # the source stays warm while it is routed
    assert not pool_server.ready("diabetes")
    # the pool pod is up: the pre-load reaches the real pool, and the route moves in the same tick
    fleet_double.set_actual_replicas(NS, "infer-pool-00001", 1)
    data = decisions(send(fn, forecast(TICK0 + 4, {"models/diabetes": quiet}, "quiet-4")))
    record = placement_of(data, "diabetes")
    assert record["preload"]["outcome"] == "loaded" and pool_server.ready("diabetes")
    assert record["action"] == "move" and record["move"]["applied"] is True, record
    (patch,) = mapping_patches(fleet_double)
    assert patch.body["spec"] == {"ref": {"name": "infer-pool"}}
    assert fleet_double.mapping_target(NS, "diabetes.models.example.com") == "infer-pool"
    # the dedicated Service then goes back to zero (nothing routes to it), after the move settled
    decisions(send(fn, forecast(TICK0 + 5, {"models/diabetes": quiet}, "quiet-5")))
    assert min_scale(fleet_double, "infer-diabetes") == 0


def test_likely_pooled_models_are_preloaded_before_their_traffic(fleet_double, scale_fn, pool_server):
    setup_fleet(fleet_double, {"wine": "pool", "diabetes": "pool"}, pool_url=pool_server.url)
    fleet_double.set_actual_replicas(NS, "infer-pool-00001", 1)
    fn = scale_fn(fleet_double, PRELOAD_GATEWAY=pool_server.control_url, **PLACEMENT_ENV)
    data = decisions(send(fn, forecast(TICK0, {"models/wine": minutes(0.1, 0.9, point_rps=0.05),
                                               "models/diabetes": minutes(0, 0.01)}, "pre-1")))
    assert placement_of(data, "wine")["preload"] == {"outcome": "loaded"}
    assert placement_of(data, "diabetes")["preload"] is None  # P(any) under the pool's warm threshold
    assert pool_server.ready("wine") and not pool_server.ready("diabetes")
    data = decisions(send(fn, forecast(TICK0 + 1, {"models/wine": minutes(0.1, 0.9, point_rps=0.05)}, "pre-2")))
    assert placement_of(data, "wine")["preload"] == {"outcome": "loaded already"}


def test_api_errors_hold_the_route_and_the_move_completes_on_redelivery(fleet_double, scale_fn):
    setup_fleet(fleet_double, {"wine": "pool", "iris": "pool"})
    fleet_double.set_actual_replicas(NS, "infer-wine-00001", 1)
    fn = scale_fn(fleet_double, API_RETRIES="1", **CROWDED)
    busy = {**NEIGHBOUR, "models/wine": minutes(9, 1.0, point_rps=8)}
    for i in range(3):
        decisions(send(fn, forecast(TICK0 + i, busy, f"e-{i}")))
    fleet_double.fail(lambda r: r.resource == "domainmappings" and r.method == "PATCH", 503, times=2)
    event = forecast(TICK0 + 3, busy, "e-3")
    response = send(fn, event)
    assert response.status_code == 503  # the broker redelivers
    assert fleet_double.mapping_target(NS, "wine.models.example.com") == "infer-pool"  # not mis-routed
    data = decisions(send(fn, event))  # the redelivery
    assert placement_of(data, "wine")["move"]["applied"] is True
    assert fleet_double.mapping_target(NS, "wine.models.example.com") == "infer-wine"


def test_a_concurrent_writer_is_not_overwritten(fleet_double, scale_fn):
    setup_fleet(fleet_double, {"wine": "pool", "iris": "pool"})
    fleet_double.add_service(NS, "wine-canary", LABEL)
    fleet_double.set_actual_replicas(NS, "infer-wine-00001", 1)
    fn = scale_fn(fleet_double, **CROWDED)
    busy = {**NEIGHBOUR, "models/wine": minutes(9, 1.0, point_rps=8)}
    for i in range(3):
        decisions(send(fn, forecast(TICK0 + i, busy, f"c-{i}")))
    key = ("serving.knative.dev", "domainmappings", NS, "wine.models.example.com")

    def someone_else_repoints() -> None:
        obj = fleet_double.objects[key]
        obj["spec"]["ref"]["name"] = "wine-canary"
        obj["metadata"]["resourceVersion"] = fleet_double._next_rv()

    fleet_double.before_next_patch(someone_else_repoints)
    data = decisions(send(fn, forecast(TICK0 + 3, busy, "c-3")))
    record = placement_of(data, "wine")
    assert record["move"]["applied"] is False and "someone else" in record["move"]["reason"]
    assert fleet_double.get(*key[:3], key[3])["spec"]["ref"]["name"] == "wine-canary"


def test_the_double_answers_a_schema_invalid_mapping_patch_with_422_and_a_webhook_denial_with_400(fleet_double):
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    setup_fleet(fleet_double, {"wine": "pool"})
    api = client.CustomObjectsApi(client.ApiClient(client.Configuration(host=fleet_double.url)))
    args = ("serving.knative.dev", "v1beta1", NS, "domainmappings", "wine.models.example.com")
    with pytest.raises(ApiException) as invalid:
        api.patch_namespaced_custom_object(*args, {"spec": {"ref": {"name": 7}}})
    assert invalid.value.status == 422 and "spec.ref.name" in invalid.value.body
    with pytest.raises(ApiException) as denied:
        api.patch_namespaced_custom_object(*args, {"spec": {"ref": {"namespace": "elsewhere"}}})
    assert denied.value.status == 400
    with pytest.raises(ApiException) as stale:
        api.patch_namespaced_custom_object(*args, {"metadata": {"resourceVersion": "1"}, "spec": {"ref": {"name": "infer-wine"}}})
    assert stale.value.status == 409
    with pytest.raises(ApiException) as missing:
        api.get_namespaced_custom_object(*args[:4], "nope.models.example.com")
    assert missing.value.status == 404
    moved = api.patch_namespaced_custom_object(*args, {"spec": {"ref": {"name": "infer-wine"}}, "status": {"x": 1}})
    assert moved["metadata"]["generation"] == 2 and moved["status"]["observedGeneration"] == 2  # reconciled at once here
    assert "x" not in moved["status"]  # status is a subresource
    assert requests.get(f"{fleet_double.url}/apis/serving.knative.dev/v1beta1/namespaces/{NS}/domainmappings",
                        timeout=5).json()["items"][0]["spec"]["ref"]["name"] == "infer-wine"
