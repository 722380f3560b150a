"""The Kubernetes API calls of the scale function, through the official `kubernetes` client.

Five calls, and RBAC grants exactly these (serving/rbac-scale.yaml):
- list Knative Services in a namespace, by the opt-in label (one call per namespace per event);
- list the Revisions (PodAutoscalers on <= 1.20) of a namespace: what they carry now, the
  cluster being the truth, not a copy (one call per namespace per event);
- get a Revision (after a conflict: its fresh resourceVersion);
- merge-patch a Revision's annotations (Knative >= 1.21), or a PodAutoscaler's (<= 1.20);
- get the knative-serving Namespace (KNATIVE_VERSION=auto reads its version label), and when it
  has none (a Knative Operator install labels no namespace), the `controller` Deployment there,
  which carries the same label on YAML and Operator installs alike.
And, with the model pool (serving/pool/, its own ClusterRole predictive-scale-placement):
- list the DomainMappings of a namespace (one call per namespace per event);
- merge-patch one mapping's `spec.ref.name`, with the resourceVersion read (a move between the
  pool and a dedicated Service is this one patch), and get it after a conflict.

Errors are types: `ApiSkip` for what a retry cannot fix (403 RBAC, 404 gone, 400 webhook
denial: log and skip that service), `ApiTransient` when 5xx or connection failures outlast the
retries (the event is answered 503 so the broker retries it). A 409 re-reads the object and
retries the patch with its fresh resourceVersion.
"""

from __future__ import annotations

import json
import time
from typing import Callable, TypeVar

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from . import metrics

SERVING = ("serving.knative.dev", "v1")
MAPPINGS = ("serving.knative.dev", "v1beta1", "domainmappings")
AUTOSCALING = ("autoscaling.internal.knative.dev", "v1alpha1")
T = TypeVar("T")


class ApiSkip(RuntimeError):
    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}")
        self.status = status


class ApiTransient(RuntimeError):
    pass


class KnativeApi:
    def __init__(self, api_url: str | None, retries: int, backoff_s: float = 0.1):
        if api_url:
            configuration = client.Configuration(host=api_url)
        else:
            configuration = client.Configuration()
            try:
                config.load_incluster_config(client_configuration=configuration)
            except config.ConfigException:
                config.load_kube_config(client_configuration=configuration)
        configuration.retries = False  # retries are ours: they re-read on 409
        api_client = client.ApiClient(configuration)
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.retries = retries
        self.backoff_s = backoff_s
        self.calls = 0

    # -- reads -----------------------------------------------------------------------------
    def knative_version(self) -> tuple[int, int]:
        namespace = self._call(lambda: self.core.read_namespace("knative-serving"), verb="get")
        label = (namespace.metadata.labels or {}).get("app.kubernetes.io/version", "")
        found = _major_minor(label)
        if found is None:
            deployment = self._call(lambda: self.apps.read_namespaced_deployment("controller", "knative-serving"),
                                    verb="get")
            controller = (deployment.metadata.labels or {}).get("app.kubernetes.io/version", "")
            found = _major_minor(controller)
            if found is None:
                raise ApiSkip(0, "no usable app.kubernetes.io/version label on the knative-serving namespace "
                                 f"({label!r}) or its controller Deployment ({controller!r}): set KNATIVE_VERSION")
        return found

    def list_services(self, namespace: str, label: tuple[str, str]) -> list[dict]:
        result = self._call(lambda: self.custom.list_namespaced_custom_object(
            *SERVING, namespace, "services", label_selector=f"{label[0]}={label[1]}"), verb="list")
        return result.get("items", [])

    def list_targets(self, namespace: str, legacy: bool) -> list[dict]:
        group, version, plural = (*AUTOSCALING, "podautoscalers") if legacy else (*SERVING, "revisions")
        return self._call(lambda: self.custom.list_namespaced_custom_object(group, version, namespace, plural),
                          verb="list").get("items", [])

    def get_target(self, namespace: str, revision: str, legacy: bool) -> dict:
        group, version, plural = (*AUTOSCALING, "podautoscalers") if legacy else (*SERVING, "revisions")
        return self._call(lambda: self.custom.get_namespaced_custom_object(group, version, namespace, plural, revision),
                          verb="get")

    # -- the one write ---------------------------------------------------------------------
    def patch_annotations(self, namespace: str, revision: str, annotations: dict[str, str | None],
                          resource_version: str | None, legacy: bool,
                          still_current: Callable[[], bool] = lambda: True) -> dict | None:
        """Merge-patch annotations on the Revision (or its PodAutoscaler when `legacy`); never
        `spec`. On 409, re-read for the current resourceVersion and try again, unless
        `still_current()` says a newer decision was made meanwhile (another replica): then None."""
        group, version, plural = (*AUTOSCALING, "podautoscalers") if legacy else (*SERVING, "revisions")
        rv = resource_version
        for attempt in range(self.retries + 1):
            body: dict = {"metadata": {"annotations": annotations}}
            if rv is not None:
                body["metadata"]["resourceVersion"] = rv
            try:
                return self._call(lambda: self.custom.patch_namespaced_custom_object(
                    group, version, namespace, plural, revision, body), conflict_is_error=True, verb="patch")
            except _Conflict:
                if attempt == self.retries:
                    raise ApiTransient(f"{plural}/{revision}: still conflicting after {attempt + 1} attempts") from None
                time.sleep(self.backoff_s * (2 ** attempt))
                if not still_current():
                    return None
                rv = self.get_target(namespace, revision, legacy)["metadata"].get("resourceVersion")
        raise AssertionError("unreachable")

    def _call(self, request: Callable[[], T], conflict_is_error: bool = False, verb: str = "other") -> T:
        for attempt in range(self.retries + 1):
            self.calls += 1
            started = time.perf_counter()
            try:
                result = request()
                metrics.api_call(verb, 200, time.perf_counter() - started)
                return result
            except ApiException as exc:
                metrics.api_call(verb, exc.status or "error", time.perf_counter() - started)
                if exc.status == 409 and conflict_is_error:
                    raise _Conflict() from None
                if exc.status in (400, 403, 404, 409, 422):
                    raise ApiSkip(exc.status, _message(exc)) from None
                failure = f"{exc.status}: {_message(exc)}"
            except (HTTPError, OSError) as exc:
                metrics.api_call(verb, "error", time.perf_counter() - started)
                failure = f"{type(exc).__name__}: {exc}"
            if attempt < self.retries:
                time.sleep(self.backoff_s * (2 ** attempt))
        raise ApiTransient(f"API server failing after {self.retries + 1} attempts: {failure}")

    # -- the model pool's routing ----------------------------------------------------------
    def list_mappings(self, namespace: str) -> list[dict]:
        return self._call(lambda: self.custom.list_namespaced_custom_object(*MAPPINGS[:2], namespace, MAPPINGS[2]),
                          verb="list").get("items", [])

    def repoint_mapping(self, namespace: str, host: str, source: str, target: str, resource_version: str | None) -> dict:
        """Point the DomainMapping `host` at the Service `target` (spec.ref.name), from `source`:
        one merge patch carrying the resourceVersion read. On 409 re-read: if someone else moved
        it meanwhile (the ref is neither `source` nor `target`), give up with ApiSkip(409) rather
        than overwrite their choice; if it already says `target`, that is done."""
        rv = resource_version
        for attempt in range(self.retries + 1):
            body: dict = {"spec": {"ref": {"name": target}}, "metadata": {}}
            if rv is not None:
                body["metadata"]["resourceVersion"] = rv
            try:
                return self._call(lambda: self.custom.patch_namespaced_custom_object(
                    *MAPPINGS[:2], namespace, MAPPINGS[2], host, body), conflict_is_error=True, verb="patch")
            except _Conflict:
                if attempt == self.retries:
                    raise ApiTransient(f"domainmappings/{host}: still conflicting after {attempt + 1} attempts") from None
                time.sleep(self.backoff_s * (2 ** attempt))
                fresh = self._call(lambda: self.custom.get_namespaced_custom_object(*MAPPINGS[:2], namespace, MAPPINGS[2], host),
                                   verb="get")
                ref = ((fresh.get("spec") or {}).get("ref") or {}).get("name")
                if ref == target:
                    return fresh
                if ref != source:
                    raise ApiSkip(409, f"domainmappings/{host} was re-pointed to {ref!r} by someone else meanwhile")
                rv = fresh["metadata"].get("resourceVersion")
        raise AssertionError("unreachable")


class _Conflict(Exception):
    pass


def _message(exc: ApiException) -> str:
    try:
        return json.loads(exc.body).get("message", exc.reason)
    except (TypeError, ValueError):
        return str(exc.reason)


def _major_minor(label: str) -> tuple[int, int] | None:
    """(1, 21) from "1.21.0" or "v1.21.0"; None for anything else (e.g. "devel", "")."""
    parts = [int(p) for p in label.lstrip("v").split(".")[:2] if p.isdigit()]
    return (parts[0], parts[1]) if len(parts) == 2 else None

