"""The Knative Service `func deploy` creates from a func.yaml, rendered offline by func's rules.

Followed (knative/func knative-v1.22.0 and HEAD c18d6045): `pkg/knative/deployer.go`
`generateNewService` and `setServiceOptions`, `pkg/deployer/common.go` `GenerateCommonLabels` /
`GenerateCommonAnnotations`, `pkg/k8s/deployer.go` `SetSecurityContext`, `SetHealthEndpoints`,
`ProcessEnvs`, `ProcessVolumes`:

- labels = deploy.labels + func's own three; they go on the Service's metadata AND the template;
- annotations = deploy.annotations + `function.knative.dev/deployer`; also on BOTH (so an
  `autoscaling.knative.dev/*` key there lands on the Service's metadata, which Knative refuses);
- deploy.options.scale -> template annotations only (min/max-scale, metric, target, utilization);
- one unnamed container (Knative names it `user-container`), func's securityContext (non-root, no
  privilege escalation, all capabilities dropped, seccomp RuntimeDefault), probes on port 8080,
  run.envs (`{{ secret:name:key }}` -> secretKeyRef), run.volumes, resources.
"""

from __future__ import annotations

import re
from pathlib import Path

from localmode.manifests import load_documents

_SECRET = re.compile(r"^\{\{\s*secret:([^:}\s]+):([^}\s]+)\s*\}\}$")


def render_service(func_yaml: Path, image: str = "registry.example.com/predictive/fn:latest") -> dict:
    (f,) = load_documents(func_yaml)
    deploy = f.get("deploy") or {}
    run = f.get("run") or {}
    labels = {item["key"]: str(item["value"]) for item in deploy.get("labels") or []}
    labels.update({"boson.dev/function": "true", "function.knative.dev/name": f["name"],
                   "function.knative.dev/runtime": f["runtime"]})
    annotations = {"function.knative.dev/deployer": "knative"}
    annotations.update({k: str(v) for k, v in (deploy.get("annotations") or {}).items()})
    revision_annotations = dict(annotations)
    options = deploy.get("options") or {}
    scale = options.get("scale") or {}
    for key, annotation, fmt in (("min", "min-scale", "{:d}"), ("max", "max-scale", "{:d}"), ("metric", "metric", "{}"),
                                 ("target", "target", "{:f}"), ("utilization", "target-utilization-percentage", "{:f}")):
        if key in scale:
            revision_annotations[f"autoscaling.knative.dev/{annotation}"] = fmt.format(scale[key])
    health = deploy.get("healthEndpoints") or {}
    container: dict = {
        "image": image,
        "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}},
        "livenessProbe": {"httpGet": {"path": health.get("liveness", "/health/liveness"), "port": 8080}},
        "readinessProbe": {"httpGet": {"path": health.get("readiness", "/health/readiness"), "port": 8080}},
        "env": [_env(e) for e in run.get("envs") or []],
    }
    resources = options.get("resources") or {}
    if resources:
        container["resources"] = {k: resources[k] for k in ("requests", "limits") if k in resources}
        container["resources"].get("limits", {}).pop("concurrency", None)
    volumes, mounts = [], []
    for index, volume in enumerate(run.get("volumes") or []):
        name = f"volume-{index}"
        if "emptyDir" in volume:
            volumes.append({"name": name, "emptyDir": volume["emptyDir"] or {}})
        elif "secret" in volume:
            volumes.append({"name": name, "secret": {"secretName": volume["secret"]}})
        elif "configMap" in volume:
            volumes.append({"name": name, "configMap": {"name": volume["configMap"]}})
        elif "persistentVolumeClaim" in volume:
            volumes.append({"name": name, "persistentVolumeClaim": volume["persistentVolumeClaim"]})
        mounts.append({"name": name, "mountPath": volume["path"]})
    if mounts:
        container["volumeMounts"] = mounts
    pod: dict = {"containers": [container]}
    if volumes:
        pod["volumes"] = volumes
    if deploy.get("serviceAccountName"):
        pod["serviceAccountName"] = deploy["serviceAccountName"]
    metadata = {"name": f["name"], "labels": labels, "annotations": annotations}
    if deploy.get("namespace"):
        metadata["namespace"] = deploy["namespace"]
    return {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": metadata,
            "spec": {"template": {"metadata": {"labels": dict(labels), "annotations": revision_annotations},
                                  "spec": pod}}}


def _env(entry: dict) -> dict:
    value = str(entry.get("value", ""))
    secret = _SECRET.match(value)
    if secret:
        return {"name": entry["name"], "valueFrom": {"secretKeyRef": {"name": secret[1], "key": secret[2]}}}
    return {"name": entry["name"], "value": value}
