"""The model pool's manifests (serving/pool/): the pool Service is hardened and scales to zero, every
pooled model keeps its own host through a DomainMapping valid against Knative's CRD schema, and the
scale function may re-point those mappings and nothing more."""

from __future__ import annotations

import copy

import jsonschema
import pytest

from localmode.kube_api_double import scale_function_rules
from tests.support.manifests import crd_schemas, load_documents, validate_resource
from tests.support.servers import ROOT

POOL = ROOT / "serving" / "pool"


def _pool_service() -> dict:
    (svc,) = load_documents(POOL / "infer-pool.yaml")
    return svc


def _mappings() -> list[dict]:
    return load_documents(POOL / "domainmappings.yaml")


def _domain() -> str:
    (config,) = load_documents(ROOT / "serving" / "config-domain.yaml")
    (domain,) = config["data"]
    return domain


def test_pool_service_scales_to_zero_is_hardened_and_mounts_the_repository_read_only():
    svc = _pool_service()
    labels = svc["metadata"]["labels"]
    assert labels["predictive-scaling.io/enabled"] == "true" and labels["predictive-scaling.io/pool"] == "true"
    assert labels["networking.knative.dev/visibility"] == "cluster-local"  # users call the mapped hosts only
    template = svc["spec"]["template"]
    assert template["metadata"]["annotations"]["autoscaling.knative.dev/min-scale"] == "0"
    assert template["metadata"]["annotations"]["autoscaling.knative.dev/class"] == "kpa.autoscaling.knative.dev"
    (container,) = template["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True and security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False and security["capabilities"]["drop"] == ["ALL"]
    env = {e["name"]: e["value"] for e in container["env"]}
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] != "/tmp"]
    assert mount["readOnly"] is True and env["MODEL_REPOSITORY"] == mount["mountPath"]
    assert float(env["POOL_MEMORY_MB"]) > 0
    (volume,) = [v for v in template["spec"]["volumes"] if v["name"] == mount["name"]]
    assert "emptyDir" in volume  # filled by the init container from the models image, per pod
    (features,) = load_documents(POOL / "features" / "config-features.yaml")
    assert features["data"]["kubernetes.podspec-init-containers"] == "enabled"


def test_every_model_keeps_its_own_host_and_starts_in_the_pool():
    pool = _pool_service()
    namespace = pool["metadata"]["namespace"]
    services = {(d["metadata"]["namespace"], d["metadata"]["name"]): d
                for p in (ROOT / "serving").glob("*.yaml") for d in load_documents(p) if d.get("kind") == "Service"}
    mappings = _mappings()
    assert {m["metadata"]["labels"]["predictive-scaling.io/model"] for m in mappings} == {"wine", "diabetes"}
    for mapping in mappings:
        validate_resource(mapping)  # the DomainMapping CRD's openAPIV3Schema (../shared/schemas)
        model = mapping["metadata"]["labels"]["predictive-scaling.io/model"]
        assert mapping["metadata"]["namespace"] == namespace
        # the host the pool reads the model from (its first DNS label) is the mapping's name
        assert mapping["metadata"]["name"] == f"{model}.{namespace}.{_domain()}"
        assert mapping["spec"]["ref"] == {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
                                          "name": pool["metadata"]["name"]}
        dedicated = services[(namespace, mapping["metadata"]["annotations"]["predictive-scaling.io/dedicated-service"])]
        assert dedicated["metadata"]["labels"]["predictive-scaling.io/enabled"] == "true"
        env = {e["name"]: e["value"] for e in dedicated["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["MODEL_NAME"] == model  # the dedicated Service serves the same model name


def test_the_domain_mapping_schema_refuses_what_it_must():
    """The validator can fail: no target, a target without a name, a field the CRD does not know."""
    schema = crd_schemas()[("serving.knative.dev/v1beta1", "DomainMapping")]
    good = _mappings()[0]
    jsonschema.validate(good, schema)
    no_ref = copy.deepcopy(good)
    del no_ref["spec"]["ref"]
    unnamed = copy.deepcopy(good)
    del unnamed["spec"]["ref"]["name"]
    wrong_type = copy.deepcopy(good)
    wrong_type["spec"]["ref"]["name"] = 7
    for bad in (no_ref, unnamed, wrong_type):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_placement_rbac_is_exactly_reading_and_repointing_domain_mappings_and_holding_deletions():
    documents = load_documents(ROOT / "serving" / "rbac-scale.yaml")
    (role,) = [d for d in documents if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "predictive-scale-placement"]
    assert role["rules"] == [{"apiGroups": ["serving.knative.dev"], "resources": ["domainmappings"],
                              "verbs": ["get", "list", "watch", "patch"]},  # watch: the watch-fed cache
                             {"apiGroups": ["serving.knative.dev"], "resources": ["services"],
                              "verbs": ["patch"]}]  # the routed finalizer only: no get, create, delete
    bindings = load_documents(POOL / "rbac-scale-placement-bindings.yaml")
    assert {b["kind"] for b in bindings} == {"RoleBinding"}
    rules = scale_function_rules(ROOT, placement=True)
    granted = {(g, r, v) for rule in rules for g in rule.api_groups for r in rule.resources for v in rule.verbs}
    assert ("serving.knative.dev", "domainmappings", "patch") in granted
    assert not [r for r in rules if "domainmappings" in r.resources and r.namespace is None]  # never cluster-wide
    assert ("serving.knative.dev", "domainmappings", "patch") not in {
        (g, r, v) for rule in scale_function_rules(ROOT) for g in rule.api_groups for r in rule.resources for v in rule.verbs}


def test_the_repository_api_is_reachable_only_through_the_control_service_from_the_scale_function():
    """The control port (POOL_CONTROL_PORT) is not the Knative Service's port, a plain Service selects
    the pool's pods on it, and the NetworkPolicy admits only the scale function's pods there."""
    svc = _pool_service()
    (container,) = svc["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    control = int(env["POOL_CONTROL_PORT"])
    assert [p["containerPort"] for p in container["ports"]] == [8080] and control != 8080
    assert env.get("POOL_ROUTING", "host") != "open"
    assert svc["spec"]["template"]["spec"]["containerConcurrency"] > 0
    documents = load_documents(POOL / "control.yaml")
    for doc in documents:
        validate_resource(doc)
    (service,) = [d for d in documents if d["kind"] == "Service"]
    assert service["spec"]["selector"] == {"serving.knative.dev/service": svc["metadata"]["name"]}
    assert [p["targetPort"] for p in service["spec"]["ports"]] == [control]
    (policy,) = [d for d in documents if d["kind"] == "NetworkPolicy"]
    assert policy["spec"]["podSelector"]["matchLabels"] == {"serving.knative.dev/service": svc["metadata"]["name"]}

    def admits(rule: dict, port: int) -> bool:
        return any(p["port"] <= port <= p.get("endPort", p["port"]) for p in rule["ports"])

    to_control = [r for r in policy["spec"]["ingress"] if admits(r, control)]
    assert len(to_control) == 1 and to_control[0]["from"] == [{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "predictive-scaling"}},
        "podSelector": {"matchLabels": {"serving.knative.dev/service": "scale"}}}]
    assert all(any(admits(r, port) and "from" not in r for r in policy["spec"]["ingress"]) for port in (8012, 8080, 9091))
    from scale.pool_settings import PoolSettings

    assert PoolSettings.control_url.format(name=svc["metadata"]["name"], namespace=svc["metadata"]["namespace"]) == \
        f"http://{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local:{control}"
