"""Every manifest under serving/ and eventing/ is valid for its kind, offline."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from tests.support.manifests import load_documents, validate_resource
from localmode.processes import binary
from tests.support.servers import ROOT

FILES = sorted(p for d in ("serving", "eventing") for p in (ROOT / d).rglob("*.yaml") if p.name != "kustomization.yaml")


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(ROOT)) for p in FILES])
def test_manifest_is_valid(path):
    docs = load_documents(path)
    assert docs, f"{path} has no documents"
    for doc in docs:
        validate_resource(doc)


def test_kustomizations_list_every_manifest():
    folders = sorted(p.parent for d in ("serving", "eventing") for p in (ROOT / d).rglob("kustomization.yaml"))
    assert len(folders) >= 10  # serving/, eventing/ and their optional parts
    for folder in folders:
        (doc,) = load_documents(folder / "kustomization.yaml")
        listed = set(doc["resources"])
        present = {p.name for p in folder.glob("*.yaml")} - {"kustomization.yaml"}
        assert listed == present, folder


def test_prometheus_config_and_rules_pass_promtool(tmp_path):
    """Debian's Prometheus is built without Kubernetes service discovery, so for this check each
    job's kubernetes_sd_configs is swapped for a static target; everything else (relabelling,
    rule files, the recording rule's PromQL) is checked by the real promtool as shipped."""
    (config_map,) = load_documents(ROOT / "serving" / "prometheus" / "prometheus-config.yaml")
    (tmp_path / "rules.yml").write_text(config_map["data"]["rules.yml"])
    config = yaml.safe_load(config_map["data"]["prometheus.yml"])
    config["rule_files"] = [str(tmp_path / "rules.yml")]
    for job in config["scrape_configs"]:
        assert job.pop("kubernetes_sd_configs")
        job["static_configs"] = [{"targets": ["127.0.0.1:9"]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    for args in (["check", "config", str(tmp_path / "prometheus.yml")], ["check", "rules", str(tmp_path / "rules.yml")]):
        result = subprocess.run([binary("promtool"), *args], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


def test_triggers_route_each_event_type_to_a_function_with_a_dead_letter_sink():
    functions = {load_documents(p)[0]["name"] for p in (ROOT / "functions").glob("*/func.yaml")}
    triggers = [d for d in load_documents(ROOT / "eventing" / "triggers.yaml") if d["kind"] == "Trigger"]
    routes = {t["spec"]["filter"]["attributes"]["type"]: t["spec"]["subscriber"]["ref"]["name"] for t in triggers}
    assert routes == {"dev.knative.sources.ping": "forecast", "io.predictive-scaling.forecast.v1": "scale"}
    for trigger in triggers:
        delivery = trigger["spec"]["delivery"]
        assert delivery["retry"] >= 1 and delivery["backoffPolicy"] == "exponential"
        assert delivery["deadLetterSink"]["ref"]["name"] in functions
        assert trigger["spec"]["subscriber"]["ref"]["name"] in functions
    (ping,) = load_documents(ROOT / "eventing" / "pingsource.yaml")
    assert ping["spec"]["schedule"] == "* * * * *" and ping["spec"]["sink"]["ref"]["kind"] == "Broker"


def test_wine_service_scales_to_zero_and_is_hardened():
    (svc,) = load_documents(ROOT / "serving" / "infer-wine.yaml")
    assert svc["metadata"]["labels"]["predictive-scaling.io/enabled"] == "true"
    annotations = svc["spec"]["template"]["metadata"]["annotations"]
    assert annotations["autoscaling.knative.dev/min-scale"] == "0"
    assert annotations["autoscaling.knative.dev/class"] == "kpa.autoscaling.knative.dev"
    (container,) = svc["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["securityContext"]["runAsNonRoot"] is True
    assert container["resources"]["limits"] and container["resources"]["requests"]


def test_invalid_manifest_is_rejected():
    """The validator can fail: a Service whose container port is a string is refused."""
    (svc,) = load_documents(ROOT / "serving" / "infer-wine.yaml")
    svc["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "eighty"
    with pytest.raises(Exception):
        validate_resource(svc)
    with pytest.raises(Exception):
        validate_resource({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": 5}})


def test_the_scale_rolebindings_are_generated_from_the_one_namespace_list():
    result = subprocess.run(["python3", str(ROOT / "scripts" / "rbac_bindings.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    bindings = load_documents(ROOT / "serving" / "rbac-scale-bindings.yaml")
    assert bindings and {b["kind"] for b in bindings} == {"RoleBinding"}
    everything = [d for p in (ROOT / "serving").rglob("*.yaml") for d in load_documents(p)]
    assert not [d for d in everything if d.get("kind") == "ClusterRoleBinding"
                and d["roleRef"]["name"] in ("predictive-scale", "predictive-scale-legacy", "predictive-scale-placement")]


def test_the_control_plane_is_cluster_local_and_redis_needs_a_password():
    for name in ("forecast", "scale", "deadletter"):
        (func,) = load_documents(ROOT / "functions" / name / "func.yaml")
        labels = {label["key"]: label["value"] for label in func["deploy"].get("labels", [])}
        assert labels.get("networking.knative.dev/visibility") == "cluster-local", name
        envs = {e["name"]: e["value"] for e in func["run"]["envs"]}
        assert envs["REDIS_PASSWORD"] == "{{ secret:redis-auth:password }}", name
    redis_deployment = [d for d in load_documents(ROOT / "serving" / "redis.yaml") if d["kind"] == "Deployment"][0]
    args = redis_deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    assert args[args.index("--maxmemory-policy") + 1] == "volatile-lru"
