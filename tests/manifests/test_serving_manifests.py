"""Every manifest under serving/ and eventing/ is valid for its kind, offline."""

from __future__ import annotations

import pytest

from tests.support.manifests import load_documents, validate_resource
from tests.support.servers import ROOT

FILES = sorted(p for d in ("serving", "eventing") for p in (ROOT / d).glob("*.yaml") if p.name != "kustomization.yaml")


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(ROOT)) for p in FILES])
def test_manifest_is_valid(path):
    docs = load_documents(path)
    assert docs, f"{path} has no documents"
    for doc in docs:
        validate_resource(doc)


def test_kustomizations_list_every_manifest():
    for folder in ("serving", "eventing"):
        kustomization = ROOT / folder / "kustomization.yaml"
        if not kustomization.exists():
            continue
        (doc,) = load_documents(kustomization)
        listed = set(doc["resources"])
        present = {p.name for p in (ROOT / folder).glob("*.yaml")} - {"kustomization.yaml"}
        assert listed == present


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
