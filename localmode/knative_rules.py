"""What Knative Serving itself does to a Service, as pure functions: the webhook's refusals where
this project tripped, and how labels and names travel from a Service to its Revisions and pods.

The API double (kube_api_double.py) answers 400 with these refusals, and the manifest tests check
every manifest and every rendered func.yaml against them, so a manifest the webhook would refuse,
or a scrape selector that no pod Knative creates would match, fails here rather than on a cluster.
Each rule names the upstream file it follows (knative/serving at 98e5ef90):

- `pkg/apis/serving/metadata_validation.go` `ValidateHasNoAutoscalingAnnotation`: no
  `autoscaling.knative.dev/*` annotation on a Service's (or Configuration's) own metadata;
- `pkg/apis/autoscaling/annotation_validation.go`: min-scale / max-scale non-negative integers with
  min <= max (max 0 = unlimited), `window` 6 s-1 h, `scale-to-zero-pod-retention-period` 0-1 h;
- `pkg/reconciler/configuration/resources/revision.go` `updateRevisionLabels`: a Revision's labels
  are its template's, plus the `serving.knative.dev/*` keys the reconciler sets; the Service's own
  labels never reach it (`pkg/reconciler/service/resources/configuration.go` copies them to the
  Configuration and Route only);
- `pkg/reconciler/revision/resources/meta.go` `makeLabels`: a pod carries its Revision's labels
  plus `serving.knative.dev/revision` and `app`;
- `pkg/apis/serving/v1/revision_defaults.go` + `pkg/apis/config/defaults.go`: an unnamed container
  is `user-container`; `pkg/reconciler/revision/resources/deploy.go` and `queue.go`: the user
  container's serving port is renamed `user-port` in the pod, and the queue-proxy sidecar exposes
  `queue-port`, `http-autometric` (9090) and `http-usermetric` (9091);
- `pkg/apis/config/features.go`: the feature flags a pod spec needs (`kubernetes.podspec-*`), and
  `pkg/apis/serving/k8s_validation.go`: the pod spec refused without them, volume mounts read-only
  except on emptyDir / PVC / ephemeral volumes, the reserved mount paths and container name.
"""

from __future__ import annotations

import re
from typing import Any

AUTOSCALING_PREFIX = "autoscaling.knative.dev"
MIN_SCALE = "autoscaling.knative.dev/min-scale"
MAX_SCALE = "autoscaling.knative.dev/max-scale"
WINDOW = "autoscaling.knative.dev/window"
RETENTION = "autoscaling.knative.dev/scale-to-zero-pod-retention-period"
USER_CONTAINER = "user-container"
USER_PORT_NAME = "user-port"
QUEUE_PROXY_PORTS = (("queue-port", 8012), ("http-autometric", 9090), ("http-usermetric", 9091))

# config-features flags and their defaults (pkg/apis/config/features.go), for the pod spec parts
# this project uses or has used.
FEATURE_DEFAULTS = {
    "kubernetes.podspec-volumes-emptydir": "enabled",
    "kubernetes.podspec-init-containers": "disabled",
    "kubernetes.podspec-persistent-volume-claim": "disabled",
    "kubernetes.podspec-persistent-volume-write": "disabled",
    "kubernetes.podspec-volumes-image": "disabled",
    "kubernetes.podspec-securitycontext": "disabled",
}


# Every flag name config-features knows for pod specs (pkg/apis/config/features.go): a name not in
# here is silently ignored by Knative, so a misspelt one in a doc or manifest is a bug.
FEATURE_FLAGS = frozenset(f"kubernetes.{name}" for name in (
    "containerspec-addcapabilities", "podspec-affinity", "podspec-dnsconfig", "podspec-dnspolicy",
    "podspec-fieldref", "podspec-hostaliases", "podspec-hostipc", "podspec-hostnetwork", "podspec-hostpid",
    "podspec-init-containers", "podspec-nodeselector", "podspec-persistent-volume-claim",
    "podspec-persistent-volume-write", "podspec-priorityclassname", "podspec-runtimeclassname",
    "podspec-schedulername", "podspec-securitycontext", "podspec-shareprocessnamespace", "podspec-tolerations",
    "podspec-topologyspreadconstraints", "podspec-volumes-csi", "podspec-volumes-emptydir",
    "podspec-volumes-ephemeral", "podspec-volumes-hostpath", "podspec-volumes-image",
    "podspec-volumes-mount-propagation"))


def duration_s(text: Any) -> float | None:
    """A Go duration as Knative parses it (time.ParseDuration), in seconds; None if invalid."""
    text = str(text).strip()
    if text in ("0", "-0", "+0"):
        return 0.0
    parts = re.findall(r"([+-]?\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text.lstrip("+"):
        return None
    unit = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * unit[u] for n, u in parts)


def revision_annotation_denial(annotations: dict[str, str]) -> str | None:
    """What the Revision webhook (autoscaling.ValidateAnnotations) refuses, or None."""
    for key in (MIN_SCALE, MAX_SCALE):
        if key in annotations and not re.fullmatch(r"\d+", str(annotations[key])):
            return f"invalid value: {annotations[key]}: {key}"
    if MIN_SCALE in annotations and MAX_SCALE in annotations:
        low, high = int(annotations[MIN_SCALE]), int(annotations[MAX_SCALE])
        if 0 < high < low:
            return f"min-scale={low} is greater than max-scale={high}: {MIN_SCALE}"
    if WINDOW in annotations:
        seconds = duration_s(annotations[WINDOW])
        if seconds is None or not 6 <= seconds <= 3600:
            return f"expected 6s <= {annotations[WINDOW]} <= 1h0m0s: {WINDOW}"
    if RETENTION in annotations:
        seconds = duration_s(annotations[RETENTION])
        if seconds is None or not 0 <= seconds <= 3600:
            return f"expected 0s <= {annotations[RETENTION]} <= 1h0m0s: {RETENTION}"
    return None


def service_denial(service: dict) -> str | None:
    """What the Service webhook refuses on create or update, or None."""
    metadata = service.get("metadata") or {}
    for key in sorted(metadata.get("annotations") or {}):
        if key.startswith(AUTOSCALING_PREFIX):
            return (f"invalid key name {key!r}: metadata.annotations: autoscaling annotations must be put under "
                    f'"spec.template.metadata.annotations" to work')
    template = ((service.get("spec") or {}).get("template") or {})
    denial = revision_annotation_denial((template.get("metadata") or {}).get("annotations") or {})
    return f"spec.template.metadata.annotations: {denial}" if denial else None


def revision_labels(service: dict, revision: str) -> dict[str, str]:
    """The labels of a Revision the Service's Configuration stamps out: the template's, plus
    Knative's own keys. Labels on the Service's metadata do not get here."""
    name = service["metadata"]["name"]
    template = (service.get("spec") or {}).get("template") or {}
    labels = dict((template.get("metadata") or {}).get("labels") or {})
    labels.update({"serving.knative.dev/service": name, "serving.knative.dev/configuration": name,
                   "serving.knative.dev/configurationGeneration": str(service["metadata"].get("generation", 1))})
    return labels


def pod_labels(service: dict, revision: str) -> dict[str, str]:
    """The labels of a pod of that Revision (its Deployment's pod template)."""
    labels = revision_labels(service, revision)
    labels["serving.knative.dev/revision"] = revision
    labels.setdefault("app", revision)
    return labels


def pod_containers(service: dict) -> list[dict]:
    """The containers of a pod of the Service's Revision: the user container(s) named as Knative
    defaults them, the serving port renamed `user-port`, and the queue-proxy sidecar."""
    spec = ((service.get("spec") or {}).get("template") or {}).get("spec") or {}
    containers = []
    unnamed = [c for c in spec.get("containers", []) if not c.get("name")]
    for index, container in enumerate(spec.get("containers", [])):
        name = container.get("name") or (USER_CONTAINER if len(unnamed) == 1 and len(spec["containers"]) == 1
                                         else f"{USER_CONTAINER}-{index}")
        ports = container.get("ports") or ([{"containerPort": 8080}] if index == 0 else [])
        containers.append({"name": name, "ports": [
            {"name": USER_PORT_NAME, "containerPort": int(p.get("containerPort", 8080))} if i == 0
            else {"name": p.get("name", ""), "containerPort": int(p["containerPort"])} for i, p in enumerate(ports)]})
    containers.append({"name": "queue-proxy", "ports": [{"name": n, "containerPort": p} for n, p in QUEUE_PROXY_PORTS]})
    return containers


RESERVED_PATHS = frozenset({"/", "/dev", "/dev/log"})


def pod_spec_denial(service: dict, config_features: dict[str, str]) -> str | None:
    """What the Service webhook refuses in the pod spec under these config-features, or None."""
    missing = features_missing(service, config_features)
    if missing:
        return f"spec.template.spec: {', '.join(missing)} is disabled in config-features, but the pod spec needs it"
    spec = ((service.get("spec") or {}).get("template") or {}).get("spec") or {}
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    for container in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
        if container.get("name") == "queue-proxy":
            return "spec.template.spec.containers.name: queue-proxy is a reserved container name"
        for mount in container.get("volumeMounts") or []:
            volume = volumes.get(mount["name"])
            if volume is None:
                return f"spec.template.spec volumeMounts.name: volume {mount['name']!r} does not exist"
            if mount["mountPath"] in RESERVED_PATHS:
                return f"spec.template.spec volumeMounts.mountPath: {mount['mountPath']} is a reserved path"
            writable_kind = any(k in volume for k in ("emptyDir", "persistentVolumeClaim", "ephemeral"))
            if not writable_kind and not mount.get("readOnly"):
                return f"spec.template.spec volumeMounts.readOnly: volume mount should be readOnly for this type of volume ({mount['name']})"
    return None


def features_needed(service: dict) -> dict[str, str]:
    """The config-features flags the Service's pod spec needs enabled (flag -> "enabled")."""
    spec = ((service.get("spec") or {}).get("template") or {}).get("spec") or {}
    needed: dict[str, str] = {}
    if spec.get("initContainers"):
        needed["kubernetes.podspec-init-containers"] = "enabled"
    for volume in spec.get("volumes") or []:
        if "emptyDir" in volume:
            needed["kubernetes.podspec-volumes-emptydir"] = "enabled"
        if "persistentVolumeClaim" in volume:
            needed["kubernetes.podspec-persistent-volume-claim"] = "enabled"
        if "image" in volume:
            needed["kubernetes.podspec-volumes-image"] = "enabled"
    return needed


def features_missing(service: dict, config_features: dict[str, str]) -> list[str]:
    """The flags the Service needs that `config_features` (the ConfigMap's data) leaves off."""
    return sorted(flag for flag, want in features_needed(service).items()
                  if config_features.get(flag, FEATURE_DEFAULTS.get(flag, "disabled")) != want)
