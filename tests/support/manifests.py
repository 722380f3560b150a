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


def validate_resource(doc: dict) -> None:
    """Raise if `doc` is not valid for its kind; unknown kinds are an error, not a pass."""
    key = (doc.get("apiVersion"), doc.get("kind"))
    schema = crd_schemas().get(key)
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
