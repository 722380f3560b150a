"""Prometheus' Kubernetes pod discovery and relabelling, enough to ask "which pods does this scrape
job keep, at which address": the `role: pod` target labels Prometheus makes (one target per
declared container port; docs "kubernetes_sd_config", discovery/kubernetes/pod.go) and the
`keep`/`drop`/`replace` actions (model/relabel/relabel.go: source labels joined by `;`, the regex
anchored at both ends, `$1` in the replacement). The Operator's PodMonitor selection is matched the
way its selector reads (matchLabels, matchExpressions, namespaceSelector, a named port)."""

from __future__ import annotations

import re


def _label_name(key: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", key)


def pod_targets(namespace: str, name: str, ip: str, labels: dict[str, str], containers: list[dict]) -> list[dict]:
    """The discovered targets of one pod, as Prometheus' `role: pod` makes them."""
    base = {"__meta_kubernetes_namespace": namespace, "__meta_kubernetes_pod_name": name,
            "__meta_kubernetes_pod_ip": ip}
    base.update({f"__meta_kubernetes_pod_label_{_label_name(k)}": v for k, v in labels.items()})
    targets = []
    for container in containers:
        for port in container.get("ports") or []:
            targets.append({**base, "__address__": f"{ip}:{port['containerPort']}",
                            "__meta_kubernetes_pod_container_name": container["name"],
                            "__meta_kubernetes_pod_container_port_name": port.get("name", ""),
                            "__meta_kubernetes_pod_container_port_number": str(port["containerPort"])})
    return targets


def relabel(target: dict[str, str], configs: list[dict]) -> dict[str, str] | None:
    """The target after `relabel_configs`, or None if dropped."""
    labels = dict(target)
    for config in configs:
        action = config.get("action", "replace")
        source = config.get("separator", ";").join(labels.get(s, "") for s in config.get("source_labels", []))
        regex = re.compile(f"^(?:{config.get('regex', '(.*)')})$")
        found = regex.match(source)
        if action == "keep" and not found:
            return None
        if action == "drop" and found:
            return None
        if action == "replace" and found:
            replacement = re.sub(r"\$\{?(\d+)\}?", r"\\\1", config.get("replacement", "$1"))
            value = found.expand(replacement)
            if value:
                labels[config["target_label"]] = value
            else:
                labels.pop(config["target_label"], None)
    return labels


def kept(job: dict, pods: list[dict]) -> list[dict]:
    """The targets a scrape job keeps among `pods` (dicts of pod_targets' arguments)."""
    namespaces = None
    for sd in job.get("kubernetes_sd_configs", []):
        assert sd["role"] == "pod", job["job_name"]
        namespaces = (sd.get("namespaces") or {}).get("names")
    out = []
    for pod in pods:
        if namespaces and pod["namespace"] not in namespaces:
            continue
        for target in pod_targets(**pod):
            result = relabel(target, job.get("relabel_configs", []))
            if result is not None:
                out.append(result)
    return out


def selector_matches(selector: dict, labels: dict[str, str]) -> bool:
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, op, values = expression["key"], expression["operator"], expression.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def podmonitor_targets(monitor: dict, pods: list[dict]) -> list[tuple[str, str]]:
    """(pod name, port name) the PodMonitor scrapes among `pods`."""
    spec = monitor["spec"]
    namespaces = spec.get("namespaceSelector") or {}
    found = []
    for pod in pods:
        if not namespaces.get("any") and pod["namespace"] not in (namespaces.get("matchNames")
                                                                  or [monitor["metadata"]["namespace"]]):
            continue
        if not selector_matches(spec["selector"], pod["labels"]):
            continue
        ports = {p.get("name") for c in pod["containers"] for p in c.get("ports") or []}
        for endpoint in spec["podMetricsEndpoints"]:
            if endpoint.get("port") in ports:
                found.append((pod["name"], endpoint["port"]))
    return found
