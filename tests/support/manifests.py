"""Validating YAML manifests offline: Knative kinds against the CRD schemas in ../shared/schemas,
core kinds against kubernetes-validate's schemas, func.yaml against the func schema."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import jsonschema
from localmode.manifests import load_documents

from tests.support.servers import SHARED


@lru_cache(maxsize=None)
def crd_schemas() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> openAPIV3Schema, from every CRD file under ../shared/schemas."""
    found = {}
    for file in (SHARED / "schemas").glob("knative-*/*.yaml"):
        for doc in load_documents(file):
            if doc.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = doc["spec"]["group"], doc["spec"]["names"]["kind"]
            for version in doc["spec"]["versions"]:
                found[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return found


_META = {"type": "object", "required": ["name"], "properties": {
    "name": {"type": "string"}, "namespace": {"type": "string"},
    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
    "annotations": {"type": "object", "additionalProperties": {"type": "string"}}}}
_STRINGS = {"type": "array", "items": {"type": "string"}}
_RELABEL = {"type": "object", "additionalProperties": False, "properties": {
    "sourceLabels": _STRINGS, "separator": {"type": "string"}, "targetLabel": {"type": "string"},
    "regex": {"type": "string"}, "modulus": {"type": "integer"}, "replacement": {"type": "string"},
    "action": {"enum": ["replace", "keep", "drop", "hashmod", "labelmap", "labeldrop", "labelkeep",
                        "lowercase", "uppercase", "keepequal", "dropequal"]}}}
_SELECTOR = {"type": "object", "additionalProperties": False, "properties": {
    "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
    "matchExpressions": {"type": "array", "items": {"type": "object", "required": ["key", "operator"],
                                                     "additionalProperties": False, "properties": {
        "key": {"type": "string"}, "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
        "values": _STRINGS}}}}}


def _kind(api_version: str, kind: str, spec: dict, namespaced: bool = True) -> dict:
    meta = dict(_META, required=["name", "namespace"] if namespaced else ["name"])
    return {"type": "object", "required": ["apiVersion", "kind", "metadata", "spec"], "additionalProperties": False,
            "properties": {"apiVersion": {"const": api_version}, "kind": {"const": kind}, "metadata": meta,
                           "spec": spec}}


# Kinds of the optional overlays whose CRDs ../shared/schemas does not hold, written from the
# upstream Go types (the fields this project uses, unknown fields refused):
# prometheus-operator pkg/apis/monitoring/v1/podmonitor_types.go and prometheusrule_types.go;
# knative/networking pkg/apis/networking/v1alpha1/domainclaim_types.go; knative/operator
# pkg/apis/operator/base/common.go (CommonSpec.Config: map of ConfigMap name -> data).
EXTRA_SCHEMAS: dict[tuple[str, str], dict] = {
    ("monitoring.coreos.com/v1", "PodMonitor"): _kind("monitoring.coreos.com/v1", "PodMonitor", {
        "type": "object", "required": ["selector", "podMetricsEndpoints"], "additionalProperties": False,
        "properties": {
            "selector": _SELECTOR, "jobLabel": {"type": "string"},
            "namespaceSelector": {"type": "object", "additionalProperties": False,
                                  "properties": {"any": {"type": "boolean"}, "matchNames": _STRINGS}},
            "podMetricsEndpoints": {"type": "array", "minItems": 1, "items": {
                "type": "object", "additionalProperties": False, "properties": {
                    "port": {"type": "string"}, "portNumber": {"type": "integer"}, "path": {"type": "string"},
                    "scheme": {"enum": ["http", "https"]}, "interval": {"type": "string", "pattern": r"^\d+[smh]$"},
                    "relabelings": {"type": "array", "items": _RELABEL},
                    "metricRelabelings": {"type": "array", "items": _RELABEL}}}}}}),
    ("monitoring.coreos.com/v1", "PrometheusRule"): _kind("monitoring.coreos.com/v1", "PrometheusRule", {
        "type": "object", "required": ["groups"], "additionalProperties": False, "properties": {
            "groups": {"type": "array", "items": {"type": "object", "required": ["name", "rules"],
                                                  "additionalProperties": False, "properties": {
                "name": {"type": "string"}, "interval": {"type": "string"},
                "rules": {"type": "array", "items": {"type": "object", "required": ["expr"],
                                                     "additionalProperties": False, "properties": {
                    "record": {"type": "string"}, "alert": {"type": "string"}, "expr": {"type": "string"},
                    "for": {"type": "string"}, "labels": {"type": "object"}, "annotations": {"type": "object"}}}}}}}}}),
    ("networking.internal.knative.dev/v1alpha1", "ClusterDomainClaim"): _kind(
        "networking.internal.knative.dev/v1alpha1", "ClusterDomainClaim", {
            "type": "object", "required": ["namespace"], "additionalProperties": False,
            "properties": {"namespace": {"type": "string", "minLength": 1}}}, namespaced=False),
    ("operator.knative.dev/v1beta1", "KnativeServing"): _kind("operator.knative.dev/v1beta1", "KnativeServing", {
        "type": "object", "properties": {
            "config": {"type": "object", "additionalProperties": {
                "type": "object", "additionalProperties": {"type": "string"}}}}}),
}


def validate_resource(doc: dict) -> None:
    """Raise if `doc` is not valid for its kind; unknown kinds are an error, not a pass."""
    key = (doc.get("apiVersion"), doc.get("kind"))
    schema = crd_schemas().get(key) or EXTRA_SCHEMAS.get(key)
    if schema is not None:
        jsonschema.validate(doc, schema)
        return
    import kubernetes_validate

    kubernetes_validate.validate(doc, "1.30", strict=True)


def validate_func_yaml(path: Path) -> dict:
    schema = json.loads((SHARED / "schemas" / "func" / "func_yaml-schema.json").read_text())
    (doc,) = load_documents(path)
    jsonschema.validate(doc, schema)
    return doc
