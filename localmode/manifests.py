"""Reading the project's YAML manifests as Kubernetes and func clients read them (local mode loads
the Triggers, RBAC and Services from eventing/ and serving/ with this)."""

from __future__ import annotations

from pathlib import Path

import yaml


class _PlainLoader(yaml.SafeLoader):
    """YAML as a Kubernetes or func client reads it into JSON: timestamps stay strings."""


_PlainLoader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.load_all(path.read_text(), Loader=_PlainLoader) if doc]
