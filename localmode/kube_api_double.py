"""A local Kubernetes API server DOUBLE, for tests and local mode. It is not Kubernetes.

No API server can run on this machine, so the scale function's real `kubernetes` client code is
exercised over real HTTP against this double, which behaves as the parts it stands in for do:

- REST paths of the core namespace API and of custom resources (Knative Services, Revisions,
  PodAutoscalers, DomainMappings): get, list (with equality label selectors), merge-patch, put.
- `metadata.resourceVersion` is bumped on every write; a write whose body carries a stale
  resourceVersion (or a PUT without the current one) gets 409 Conflict.
- RBAC: given the rules of the ClusterRoles bound to the function's ServiceAccount (parsed from
  serving/rbac.yaml), any request they do not allow gets 403 Forbidden.
- 404 for what does not exist; 400 for what Knative's webhooks deny (the rules, each with the
  upstream file it follows, are in knative_rules.py): a change to a Revision's spec (immutable);
  Revision annotations out of range (min-scale not a non-negative integer or above max-scale,
  `window` outside 6 s-1 h, `scale-to-zero-pod-retention-period` outside 0-1 h); a Service (create
  or update) with any `autoscaling.knative.dev/*` annotation on its own metadata, or a pod spec
  that the `config_features` given (default: Knative's defaults) do not allow (an init container
  without kubernetes.podspec-init-containers, a writable mount of a ConfigMap, ...).
- Services created (POST) stamp out a Revision as the Configuration reconciler does: its labels
  are the template's plus Knative's `serving.knative.dev/*` keys, never the Service's own labels.
- Knative >= 1.21 (`version="1.21"`): autoscaling annotations patched on a Revision are copied to
  its PodAutoscaler (the revision reconciler does so); a direct PodAutoscaler patch is reverted.
  `version="1.20"`: the PodAutoscaler is where min-scale must be patched.
- DomainMappings (serving.knative.dev/v1beta1, the model pool's routing): a patch is checked
  against the CRD's openAPIV3Schema when one is given (`schemas`, e.g. from ../shared/schemas) and
  answered 422 Invalid as the API server's structural validation does; Knative's webhook rules
  (the ref in the mapping's own namespace, a name that is a domain) are 400; `status` is a
  subresource (a patch of the main resource leaves it alone); a spec change bumps
  `metadata.generation`, and the mapping reports Ready at that generation only after
  `mapping_reconcile_s` (the reconciler and net-istio programming the gateways), and only if its
  ref names a Service that exists (else Ready False), as `status.observedGeneration` and the Ready
  condition say on a cluster; and only if its host is claimed for its namespace: a
  ClusterDomainClaim (networking.internal.knative.dev/v1alpha1, cluster-scoped) naming that
  namespace, or `autocreate_domain_claims` on (config-network's autocreate-cluster-domain-claims,
  off by default: then the double creates the claim as Knative's reconciler does). Without it the
  mapping is DomainClaimed False and not Ready (knative/serving
  pkg/reconciler/domainmapping/reconciler.go `reconcileDomainClaim`).
- Anything else a check reads can be laid in as an object (`put_object`): CRDs
  (apiextensions.k8s.io), ConfigMaps, Deployments, Knative Eventing resources.
- Revisions carry `status.actualReplicas` (ready pods), set by whoever runs the pods here (the
  Serving stand-in, or a test) through `set_actual_replicas`.
- Deletion with finalizers (`delete`, as `kubectl delete` with background propagation): an
  object with finalizers only gets `metadata.deletionTimestamp` (MODIFIED) and stays until a
  patch empties its finalizers, which removes it (DELETED, then the `on_deleted` callbacks: the
  garbage collector's cascade is the caller's); a patch adding a finalizer to an object being
  deleted is 422, as the API server forbids it.
- Every request is recorded (method, verb, resource, name, status), and faults can be injected
  (a status for the next N matching requests; a concurrent writer before the next patch; events
  applied but never delivered to watchers).
- Watch (`?watch=1`), as the API server's watch cache serves it (k8s.io/apiserver
  pkg/storage/cacher/watch_cache.go; "Efficient detection of changes" in the API concepts docs):
  every write is an event in a bounded history (`watch_history` events, the watch cache's
  capacity); a watch from resourceVersion R streams, as chunked JSON lines, the ADDED / MODIFIED /
  DELETED events after R (an object leaving a label selector is DELETED for that watch, one
  entering it ADDED), BOOKMARK events carrying the current resourceVersion while idle when
  `allowWatchBookmarks=true`, and ends after `timeoutSeconds`. A watch without a resourceVersion
  (or "0") starts with a synthetic ADDED per object. R older than the history (the events after it
  were dropped, or `compact()` was called) is answered as the cacher does: HTTP 200 with one ERROR
  event whose Status is 410 Expired "too old resource version: R (oldest-1)".
- Paged lists (`limit` / `continue`, "Retrieving large results sets in chunks"): pages of a
  consistent snapshot at the first page's resourceVersion, in key order, with
  `metadata.continue` and `remainingItemCount` (not with a label selector, as the docs say); a
  continue token older than the history (etcd compacted) is 410 Expired, and the client must
  start over.
"""

from __future__ import annotations

import base64
import bisect
import copy
import json
import re
import threading
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlparse

from localmode import knative_rules

SERVING = ("serving.knative.dev", "v1")
MAPPINGS = ("serving.knative.dev", "v1beta1", "domainmappings")
AUTOSCALING = ("autoscaling.internal.knative.dev", "v1alpha1")
MIN_SCALE = "autoscaling.knative.dev/min-scale"
MAX_SCALE = "autoscaling.knative.dev/max-scale"
CLAIMS = ("networking.internal.knative.dev", "v1alpha1", "clusterdomainclaims")
_PATH = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?$")


@dataclass
class Recorded:
    method: str
    verb: str
    group: str
    resource: str
    namespace: str | None
    name: str | None
    status: int
    body: Any = None
    query: dict = field(default_factory=dict)
    at: float = 0.0
    """Wall-clock time the request was answered."""


@dataclass
class Rule:
    api_groups: list[str]
    resources: list[str]
    verbs: list[str]
    resource_names: list[str] = field(default_factory=list)
    namespace: str | None = None
    """Set for a rule granted by a RoleBinding: it holds in that namespace only."""

    def allows(self, group: str, resource: str, verb: str, name: str | None, namespace: str | None = None) -> bool:
        return ((self.namespace is None or self.namespace == namespace)
                and (group in self.api_groups or "*" in self.api_groups)
                and (resource in self.resources or "*" in self.resources)
                and (verb in self.verbs or "*" in self.verbs)
                and (not self.resource_names or name in self.resource_names))


def rules_from_manifests(documents: list[dict], service_account: str) -> list[Rule]:
    """The rules of every (Cluster)Role bound to `service_account` in the documents."""
    roles = {(d["kind"], d["metadata"]["name"]): d for d in documents if d.get("kind") in ("Role", "ClusterRole")}
    rules: list[Rule] = []
    for binding in (d for d in documents if d.get("kind") in ("RoleBinding", "ClusterRoleBinding")):
        if not any(s.get("kind") == "ServiceAccount" and s.get("name") == service_account for s in binding["subjects"]):
            continue
        role = roles.get((binding["roleRef"]["kind"], binding["roleRef"]["name"]))
        scope = binding["metadata"].get("namespace") if binding["kind"] == "RoleBinding" else None
        for rule in (role or {}).get("rules", []):
            rules.append(Rule(rule.get("apiGroups", []), rule.get("resources", []), rule.get("verbs", []),
                              rule.get("resourceNames", []), scope))
    return rules


def scale_function_rules(root, legacy: bool = False, namespaces: list[str] | None = None,
                         placement: bool = False) -> list[Rule]:
    """What serving/ grants the scale function: its (Cluster)Roles, bound in the managed
    namespaces by the generated RoleBindings, or, given `namespaces`, by the same RoleBindings
    laid in those namespaces instead (a benchmark's or a test's own). `placement`: with the model
    pool's bindings too (serving/pool/)."""
    from localmode.manifests import load_documents

    documents = load_documents(root / "serving" / "rbac-scale.yaml")
    bindings = load_documents(root / "serving" / "rbac-scale-bindings.yaml")
    if legacy:
        bindings += load_documents(root / "serving" / "knative-1.20" / "rbac-scale-legacy.yaml")
    if placement:
        bindings += load_documents(root / "serving" / "pool" / "rbac-scale-placement-bindings.yaml")
    if namespaces is not None:
        by_role = {b["roleRef"]["name"]: b for b in bindings}
        bindings = [{**b, "metadata": {**b["metadata"], "namespace": ns}} for b in by_role.values() for ns in namespaces]
    return rules_from_manifests(documents + bindings, "predictive-scale")


class KubeApiDouble:
    def __init__(self, rules: list[Rule] | None = None, version: str = "1.21", domain: str = "example.com",
                 schemas: dict[tuple[str, str], dict] | None = None, mapping_reconcile_s: float = 0.0,
                 autocreate_domain_claims: bool = False, config_features: dict[str, str] | None = None,
                 watch_history: int = 100_000, bookmark_interval_s: float = 1.0):
        self.rules = rules
        self.config_features = dict(config_features or {})
        """knative-serving's config-features data (empty: Knative's defaults) the webhook checks pod specs against."""
        self.autocreate_domain_claims = autocreate_domain_claims
        self.version = version
        self.domain = domain
        self.schemas = schemas or {}
        """(apiVersion, kind) -> openAPIV3Schema checked on writes (422 when invalid)."""
        self.mapping_reconcile_s = mapping_reconcile_s
        self._settle_at: dict[tuple, float] = {}
        self._routed: dict[tuple, str] = {}
        """Mapping -> the Service its programmed route sends requests to (what the gateways do)."""
        self.objects: dict[tuple[str, str, str | None, str], dict] = {}
        self.requests: list[Recorded] = []
        self._faults: list[tuple[Callable[[Recorded], bool], int, list[int]]] = []
        self._before_patch: list[Callable[[], None]] = []
        self._on_deleted: list[Callable[[tuple], None]] = []
        self._lock = threading.RLock()
        self._rv = 1000
        # -- watch: the history of writes (the watch cache), and who is waiting on it
        self._events: deque[_Event] = deque()
        self._history = watch_history
        self._compacted_rv = 0
        """The resourceVersion of the newest event dropped from the history (a watch from an
        older one, or a continue token older than it, is 410 Gone)."""
        self._changed = threading.Condition(self._lock)
        self._drops: list[tuple[Callable[[tuple], bool], list[int]]] = []
        self._snapshots: OrderedDict[tuple, list[tuple[str, str]]] = OrderedDict()
        self.bookmark_interval_s = bookmark_interval_s
        self._closing = False
        self._epoch = 0
        self._watching: dict[int, int] = {}
        """Open watch -> the resourceVersion up to which its events have been sent."""
        self.add_namespace("knative-serving", {"app.kubernetes.io/version": "1.21.0" if _version(version) >= (1, 21) else "1.20.2"})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        with self._lock:
            self._closing = True
            self._changed.notify_all()
        self._server.shutdown()
        self._server.server_close()

    # -- fixtures --------------------------------------------------------------------------
    @property
    def resource_version(self) -> int:
        """The newest resourceVersion written (grows with every change)."""
        return self._rv

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def put_object(self, group: str, plural: str, namespace: str | None, obj: dict) -> dict:
        with self._lock:
            obj = copy.deepcopy(obj)
            obj.setdefault("metadata", {})
            obj["metadata"].setdefault("uid", str(uuid.uuid4()))  # a recreated object gets a new one
            self._commit((group, plural, namespace, obj["metadata"]["name"]), obj)
            return obj

    def delete_object(self, group: str, plural: str, namespace: str | None, name: str) -> None:
        """The object is removed (a DELETED event for watchers)."""
        with self._lock:
            key = (group, plural, namespace, name)
            obj = self.objects.pop(key)
            obj["metadata"]["resourceVersion"] = self._next_rv()
            self._log("DELETED", key, obj, obj["metadata"].get("labels") or {}, None)

    def delete(self, group: str, plural: str, namespace: str | None, name: str) -> bool:
        """`kubectl delete` (background propagation): True when the object is gone; False when
        finalizers hold it (it carries deletionTimestamp until they are removed)."""
        key = (group, plural, namespace, name)
        with self._lock:
            obj = copy.deepcopy(self.objects[key])
            if not obj["metadata"].get("finalizers"):
                self.delete_object(group, plural, namespace, name)
            else:
                if not obj["metadata"].get("deletionTimestamp"):
                    obj["metadata"]["deletionTimestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                    self._commit(key, obj)
                return False
        self._deleted(key)
        return True

    def on_deleted(self, callback: Callable[[tuple], None]) -> None:
        """`callback(key)` after an object is removed by `delete` or by its last finalizer's removal."""
        self._on_deleted.append(callback)

    def _deleted(self, key: tuple) -> None:
        for callback in list(self._on_deleted):
            callback(key)

    def _commit(self, key: tuple, obj: dict) -> None:
        """Store `obj` as the object at `key` with a new resourceVersion, and record the write
        as a watch event (under the lock). Every write goes through here."""
        before = self.objects.get(key)
        obj["metadata"]["resourceVersion"] = self._next_rv()
        self.objects[key] = obj
        self._log("ADDED" if before is None else "MODIFIED", key, obj,
                  None if before is None else (before["metadata"].get("labels") or {}),
                  obj["metadata"].get("labels") or {})

    def _log(self, kind: str, key: tuple, obj: dict, labels_before: dict | None, labels_after: dict | None) -> None:
        delivered = True
        for match, left in self._drops:
            if left[0] > 0 and match(key):
                left[0] -= 1
                delivered = False
        if len(self._events) >= self._history:
            self._compacted_rv = self._events.popleft().rv
        self._events.append(_Event(int(obj["metadata"]["resourceVersion"]), kind, key, json.dumps(obj),
                                   dict(labels_before) if labels_before is not None else None,
                                   dict(labels_after) if labels_after is not None else None, delivered))
        self._changed.notify_all()

    def add_namespace(self, name: str, labels: dict[str, str] | None = None) -> None:
        self.put_object("", "namespaces", None, {"apiVersion": "v1", "kind": "Namespace",
                                                 "metadata": {"name": name, "labels": labels or {}}})

    def add_service(self, namespace: str, name: str, labels: dict[str, str] | None = None,
                    template_annotations: dict[str, str] | None = None, revisions: tuple[str, ...] | None = None,
                    traffic: dict[str, int] | None = None, template_labels: dict[str, str] | None = None) -> None:
        """A Knative Service with its Revisions (and their PodAutoscalers), all Ready."""
        revisions = revisions or (f"{name}-00001",)
        traffic = traffic or {revisions[-1]: 100}
        template_annotations = dict(template_annotations or {})
        self.put_object(SERVING[0], "services", namespace, {
            "apiVersion": "serving.knative.dev/v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {}), "generation": 1},
            "spec": {"template": {"metadata": {"annotations": template_annotations,
                                               "labels": dict(template_labels or {})},
                                  "spec": {"containers": [{"image": f"registry.example/{name}:1"}]}}},
            "status": {"url": f"http://{name}.{namespace}.{self.domain}", "latestReadyRevisionName": revisions[-1],
                       "traffic": [{"revisionName": r, "percent": p, "latestRevision": r == revisions[-1]}
                                   for r, p in traffic.items()],
                       "conditions": [{"type": "Ready", "status": "True"}]},
        })
        for revision in revisions:
            self.add_revision(namespace, name, revision, template_annotations)

    def add_revision(self, namespace: str, service: str, revision: str, annotations: dict[str, str]) -> None:
        ksvc = self.objects.get((SERVING[0], "services", namespace, service))
        labels = (knative_rules.revision_labels(ksvc, revision) if ksvc is not None
                  else {"serving.knative.dev/service": service})
        meta = {"name": revision, "namespace": namespace, "annotations": dict(annotations), "labels": labels}
        self.put_object(SERVING[0], "revisions", namespace, {
            "apiVersion": "serving.knative.dev/v1", "kind": "Revision", "metadata": meta,
            "spec": {"containers": [{"image": f"registry.example/{service}:1"}]},
            "status": {"actualReplicas": 0, "conditions": [{"type": "Ready", "status": "True"}]}})
        self.put_object(AUTOSCALING[0], "podautoscalers", namespace, {
            "apiVersion": "autoscaling.internal.knative.dev/v1alpha1", "kind": "PodAutoscaler",
            "metadata": {**copy.deepcopy(meta)}, "spec": {"reachability": "Reachable"}})

    def add_domain_mapping(self, namespace: str, host: str, target: str, labels: dict[str, str] | None = None,
                           annotations: dict[str, str] | None = None, claimed: bool = True) -> dict:
        """A DomainMapping `host` -> the Knative Service `target`, reconciled (Ready when its
        target exists and its host is claimed). `claimed`: lay in its ClusterDomainClaim too, as
        the install's serving/pool/domain-claims/ does."""
        with self._lock:
            key = (MAPPINGS[0], MAPPINGS[2], namespace, host)
            if claimed and (CLAIMS[0], CLAIMS[2], None, host) not in self.objects:
                self.add_cluster_domain_claim(host, namespace)
            if (SERVING[0], "services", namespace, target) in self.objects and (
                    claimed or self.autocreate_domain_claims):
                self._routed[key] = target
            return self.put_object(MAPPINGS[0], MAPPINGS[2], namespace, {
                "apiVersion": f"{MAPPINGS[0]}/{MAPPINGS[1]}", "kind": "DomainMapping",
                "metadata": {"name": host, "namespace": namespace, "generation": 1, "labels": dict(labels or {}),
                             "annotations": dict(annotations or {})},
                "spec": {"ref": {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": target}},
                "status": self._mapping_status(namespace, host, target, 1)})

    def mapping_target(self, namespace: str, host: str) -> str | None:
        """Where the mapping sends requests now: its ref once reconciled at its generation, else
        the target it had before (the gateways still carry the old route until then)."""
        with self._lock:
            self._settle()
            return self._routed.get((MAPPINGS[0], MAPPINGS[2], namespace, host))

    def set_actual_replicas(self, namespace: str, revision: str, ready: int) -> None:
        """The Revision's ready pods (status.actualReplicas), as the autoscaler reports them."""
        with self._lock:
            obj = self.objects.get((SERVING[0], "revisions", namespace, revision))
            if obj is None or (obj.get("status") or {}).get("actualReplicas") == ready:
                return
            obj = copy.deepcopy(obj)
            obj.setdefault("status", {})["actualReplicas"] = ready
            self._commit((SERVING[0], "revisions", namespace, revision), obj)

    def add_cluster_domain_claim(self, host: str, namespace: str) -> dict:
        """A ClusterDomainClaim delegating `host` to `namespace` (the cluster admin's object)."""
        with self._lock:
            return self.put_object(CLAIMS[0], CLAIMS[2], None, {
                "apiVersion": f"{CLAIMS[0]}/{CLAIMS[1]}", "kind": "ClusterDomainClaim",
                "metadata": {"name": host}, "spec": {"namespace": namespace}})

    def _claim(self, namespace: str, host: str) -> dict:
        """The DomainClaimed condition, creating the claim when autocreate is on."""
        claim = self.objects.get((CLAIMS[0], CLAIMS[2], None, host))
        if claim is None and self.autocreate_domain_claims:
            claim = self.add_cluster_domain_claim(host, namespace)
        if claim is None:
            return {"type": "DomainClaimed", "status": "False", "reason": "DomainAlreadyClaimed",
                    "message": f'no ClusterDomainClaim found for domain "{host}" '
                               "(and autocreate-cluster-domain-claims property is not true)"}
        if (claim.get("spec") or {}).get("namespace") != namespace:
            return {"type": "DomainClaimed", "status": "False", "reason": "DomainAlreadyClaimed",
                    "message": f'namespace "{namespace}" does not own ClusterDomainClaim for "{host}"'}
        return {"type": "DomainClaimed", "status": "True"}

    def _mapping_status(self, namespace: str, host: str, target: str, generation: int) -> dict:
        claimed = self._claim(namespace, host)
        found = (SERVING[0], "services", namespace, target) in self.objects
        ready = {"type": "Ready", "status": "True" if found and claimed["status"] == "True" else "False"}
        if claimed["status"] != "True":
            ready.update(reason=claimed["reason"], message=claimed["message"])
        elif not found:
            ready.update(reason="DomainMappingResolveFailed", message=f'services.serving.knative.dev "{target}" not found')
        return {"observedGeneration": generation, "url": f"https://{host}", "conditions": [ready, claimed]}

    def _settle(self) -> None:
        """Reconcile the mappings whose programming delay has passed (called under the lock)."""
        now = time.monotonic()
        for key, at in list(self._settle_at.items()):
            if at <= now and key in self.objects:
                obj = copy.deepcopy(self.objects[key])
                target = obj["spec"]["ref"]["name"]
                obj["status"] = self._mapping_status(key[2], key[3], target, obj["metadata"]["generation"])
                if obj["status"]["conditions"][0]["status"] == "True":
                    self._routed[key] = target  # an unresolvable ref leaves the old route in place
                self._commit(key, obj)
                del self._settle_at[key]

    def roll_out(self, namespace: str, service: str, revision: str) -> None:
        """A new Revision from the Service's template takes all traffic (what a deploy does)."""
        with self._lock:
            ksvc = copy.deepcopy(self.objects[(SERVING[0], "services", namespace, service)])
            self.add_revision(namespace, service, revision, ksvc["spec"]["template"]["metadata"].get("annotations", {}))
            ksvc["status"]["traffic"] = [{"revisionName": revision, "percent": 100, "latestRevision": True}]
            ksvc["status"]["latestReadyRevisionName"] = revision
            self._commit((SERVING[0], "services", namespace, service), ksvc)

    def get(self, group: str, plural: str, namespace: str | None, name: str) -> dict:
        with self._lock:
            return copy.deepcopy(self.objects[(group, plural, namespace, name)])

    def annotations(self, plural: str, namespace: str, name: str) -> dict[str, str]:
        group = SERVING[0] if plural in ("revisions", "services") else AUTOSCALING[0]
        return self.get(group, plural, namespace, name)["metadata"].get("annotations", {})

    # -- faults ----------------------------------------------------------------------------
    def fail(self, match: Callable[[Recorded], bool], status: int, times: int = 1) -> None:
        """Answer `status` to the next `times` requests that `match`."""
        with self._lock:
            self._faults.append((match, status, [times]))

    def before_next_patch(self, action: Callable[[], None]) -> None:
        """Run `action` (a concurrent writer) just before the next PATCH is applied."""
        with self._lock:
            self._before_patch.append(action)

    def drop_events(self, match: Callable[[tuple], bool], times: int = 1) -> None:
        """The next `times` writes whose key (group, plural, namespace, name) matches are applied
        but never reach a watcher: a watch that missed an event, which only a list corrects."""
        with self._lock:
            self._drops.append((match, [times]))

    def compact(self) -> None:
        """Forget the watch history (etcd compaction, a watch cache re-initialised): open watches
        end, and every watch resuming from an earlier resourceVersion, and every continue token,
        gets 410 Gone."""
        with self._lock:
            self._events.clear()
            self._compacted_rv = self._rv
            self._snapshots.clear()
            self._epoch += 1  # open watches end, as when the watch cache is re-initialised
            self._changed.notify_all()

    def settle_watches(self, timeout_s: float = 5.0) -> bool:
        """Wait until every open watch has been sent every event written so far (True), or the
        timeout passes (False): a test that changes the cluster and then sends an event at once
        would otherwise race the function's watch-fed cache (eventually consistent, as any
        controller's)."""
        with self._lock:
            return self._changed.wait_for(lambda: all(p >= self._rv for p in self._watching.values()), timeout_s)

    def set_conditions(self, group: str, plural: str, namespace: str, name: str, conditions: list[dict]) -> None:
        """A controller rewrites the object's status conditions (a MODIFIED event for watchers)."""
        with self._lock:
            obj = copy.deepcopy(self.objects[(group, plural, namespace, name)])
            obj.setdefault("status", {})["conditions"] = conditions
            self._commit((group, plural, namespace, name), obj)

    def touch(self, group: str, plural: str, namespace: str, name: str, annotations: dict[str, str]) -> None:
        """Another writer changes the object (bumps its resourceVersion)."""
        with self._lock:
            obj = copy.deepcopy(self.objects[(group, plural, namespace, name)])
            obj["metadata"].setdefault("annotations", {}).update(annotations)
            self._commit((group, plural, namespace, name), obj)

    def calls(self, method: str | None = None, resource: str | None = None) -> list[Recorded]:
        return [r for r in self.requests if (method is None or r.method == method)
                and (resource is None or r.resource == resource)]

    # -- HTTP ------------------------------------------------------------------------------
    def _handler(self):
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the API server: one connection serves many requests
            disable_nagle_algorithm = True  # headers and body leave at once (no 40 ms delayed-ACK stall)

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                double._serve(self, "GET")

            def do_PATCH(self) -> None:
                double._serve(self, "PATCH")

            def do_PUT(self) -> None:
                double._serve(self, "PUT")

            def do_POST(self) -> None:
                double._serve(self, "POST")

            def do_DELETE(self) -> None:
                double._serve(self, "DELETE")

        return Handler

    def _serve(self, http: BaseHTTPRequestHandler, method: str) -> None:
        url = urlparse(http.path)
        length = int(http.headers.get("Content-Length") or 0)
        raw = http.rfile.read(length) if length else b""
        match = _PATH.match(url.path)
        if not match:
            self._reply(http, 404, _status(404, "NotFound", f"no route for {url.path}"))
            return
        group = "" if match["core"] else match["group"]
        plural, namespace, name = match["plural"], match["ns"], match["name"]
        if group == "" and plural == "namespaces" and name is None and namespace:
            plural, name, namespace = "namespaces", namespace, None
        verb = {"GET": "get" if name else "list", "PATCH": "patch", "PUT": "update",
                "POST": "create", "DELETE": "delete"}[method]
        body = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                self._reply(http, 400, _status(400, "BadRequest", "body is not JSON"))
                return
        query = parse_qs(url.query)
        if verb == "list" and _flag(query, "watch"):
            self._watch(http, Recorded(method, "watch", group, plural, namespace, name, 0, None, query))
            return
        record = Recorded(method, verb, group, plural, namespace, name, 0, body, query)
        with self._lock:
            self._settle()
            status, payload = self._answer(record, query, http.headers.get("Content-Type", ""))
            record.status = status
            record.at = time.time()
            self.requests.append(record)
        self._reply(http, status, payload)

    def _refused(self, record: Recorded) -> tuple[int, dict] | None:
        """An injected fault, or RBAC's 403, for this request (None: go on)."""
        for match, status, left in self._faults:
            if left[0] > 0 and match(record):
                left[0] -= 1
                return status, _status(status, "InjectedFault", f"injected {status}")
        if self.rules is not None and not any(
                r.allows(record.group, record.resource, record.verb, record.name, record.namespace) for r in self.rules):
            return 403, _status(403, "Forbidden",
                                f'{record.resource}.{record.group} "{record.name}" is forbidden: cannot {record.verb}')
        return None

    def _answer(self, record: Recorded, query: dict, content_type: str) -> tuple[int, dict | bytes]:
        refused = self._refused(record)
        if refused is not None:
            return refused
        if record.verb == "list":
            return self._list(record, query)
        if record.verb == "create":
            return self._create(record)
        key = (record.group, record.resource, record.namespace, record.name)
        current = self.objects.get(key)
        if current is None:
            return 404, _status(404, "NotFound", f'{record.resource} "{record.name}" not found')
        if record.verb == "get":
            return 200, copy.deepcopy(current)
        if record.verb not in ("patch", "update"):
            return 405, _status(405, "MethodNotAllowed", f"{record.method} is not served by this double")
        if record.verb == "patch" and "merge-patch" not in content_type:
            return 415, _status(415, "UnsupportedMediaType", f"content type {content_type!r}")
        for action in self._before_patch:
            action()
        self._before_patch.clear()
        current = self.objects[key]
        sent_rv = (record.body or {}).get("metadata", {}).get("resourceVersion")
        if (sent_rv is not None and sent_rv != current["metadata"]["resourceVersion"]) or (
                record.verb == "update" and sent_rv is None):
            return 409, _status(409, "Conflict", "the object has been modified; please apply your changes to the latest version and try again")
        updated = _merge(copy.deepcopy(current), record.body or {}) if record.verb == "patch" else copy.deepcopy(record.body)
        if record.resource == MAPPINGS[2]:
            updated["status"] = copy.deepcopy(current.get("status"))  # status is a subresource
            invalid = self._invalid(updated)
            if invalid:
                return 422, _status(422, "Invalid", f'{record.resource}.{record.group} "{record.name}" is invalid: {invalid}')
        if current["metadata"].get("deletionTimestamp") and \
                set(updated["metadata"].get("finalizers") or []) - set(current["metadata"].get("finalizers") or []):
            return 422, _status(422, "Invalid", f'{record.resource}.{record.group} "{record.name}" is invalid: '
                                "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted")
        denial = self._webhook(record.resource, current, updated)
        if denial:
            return 400, _status(400, "BadRequest", f"admission webhook denied the request: {denial}")
        if record.resource == MAPPINGS[2] and updated.get("spec") != current.get("spec"):
            updated["metadata"]["generation"] = int(current["metadata"].get("generation") or 1) + 1
            conditions = [{"type": "Ready", "status": "Unknown", "reason": "IngressNotConfigured"}]
            updated["status"] = {**(updated.get("status") or {}), "conditions": conditions}
            self._settle_at[key] = time.monotonic() + self.mapping_reconcile_s
        if record.resource == "podautoscalers" and _version(self.version) >= (1, 21):
            return 200, copy.deepcopy(current)  # the revision reconciler puts it back at once
        self._commit(key, updated)
        if updated["metadata"].get("deletionTimestamp") and not updated["metadata"].get("finalizers"):
            with self._lock:
                self.delete_object(*key)
            threading.Thread(target=self._deleted, args=(key,), daemon=True).start()
            return 200, copy.deepcopy(updated)
        if key in self._settle_at and self.mapping_reconcile_s <= 0:
            self._settle()
            updated = self.objects[key]
        if record.resource == "revisions":
            pa = self.objects.get((AUTOSCALING[0], "podautoscalers", record.namespace, record.name))
            if pa is not None:
                scaling = {k: v for k, v in updated["metadata"].get("annotations", {}).items()
                           if k.startswith("autoscaling.knative.dev/")}
                pa_ann = {k: v for k, v in pa["metadata"].get("annotations", {}).items()
                          if not k.startswith("autoscaling.knative.dev/")}
                pa = copy.deepcopy(pa)
                pa["metadata"]["annotations"] = {**pa_ann, **scaling}
                self._commit((AUTOSCALING[0], "podautoscalers", record.namespace, record.name), pa)
        return 200, copy.deepcopy(updated)

    # -- list (paged) and watch -------------------------------------------------------------
    def _list(self, record: Recorded, query: dict) -> tuple[int, dict | bytes]:
        """A list; with `limit`, one page of the snapshot taken at the first page's
        resourceVersion (etcd serves the continuation at that revision until it is compacted)."""
        selector = _selector(query)
        limit = int(query.get("limit", ["0"])[0] or 0)
        token = query.get("continue", [""])[0]
        scope = (record.group, record.resource, record.namespace, tuple(sorted(selector.items())))
        if token:
            try:
                decoded = json.loads(base64.urlsafe_b64decode(token.encode()))
                rv, start = int(decoded["rv"]), str(decoded["start"])
            except (ValueError, KeyError, TypeError):
                return 400, _status(400, "BadRequest", "continue key is not valid")
            snapshot = self._snapshots.get((rv, *scope))
            if rv <= self._compacted_rv or snapshot is None:
                return 410, _status(410, "Expired", "The provided continue parameter is too old to display a consistent "
                                    "list result. You can start a new list without the continue parameter.")
            at = bisect.bisect_left(snapshot, (start, ""))
        else:
            rv = self._rv
            snapshot = sorted((f"{ns or ''}/{name}", json.dumps(o)) for (g, p, ns, name), o in self.objects.items()
                              if g == record.group and p == record.resource
                              and (record.namespace is None or ns == record.namespace) and _matches(o, selector))
            at = 0
            if limit > 0 and len(snapshot) > limit:
                self._snapshots[(rv, *scope)] = snapshot
                while len(self._snapshots) > 32:
                    self._snapshots.popitem(last=False)
        end = len(snapshot) if limit <= 0 else min(len(snapshot), at + limit)
        meta: dict = {"resourceVersion": str(rv)}
        if end < len(snapshot):
            meta["continue"] = base64.urlsafe_b64encode(
                json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": snapshot[end - 1][0] + "\x00"}).encode()).decode()
            if not selector:
                meta["remainingItemCount"] = len(snapshot) - end
        head = json.dumps({"kind": "List", "apiVersion": "v1", "metadata": meta})[:-1]
        return 200, (head + ', "items": [' + ", ".join(text for _, text in snapshot[at:end]) + "]}").encode()

    def _watch(self, http: BaseHTTPRequestHandler, record: Recorded) -> None:
        """Serve one watch: chunked JSON lines until `timeoutSeconds`, the client leaving, or close()."""
        query = record.query
        selector = _selector(query)
        timeout = float(query.get("timeoutSeconds", ["1800"])[0] or 1800)
        bookmarks = _flag(query, "allowWatchBookmarks")
        since = query.get("resourceVersion", [""])[0]
        with self._lock:
            refused = self._refused(record)
            record.status = refused[0] if refused else 200
            record.at = time.time()
            self.requests.append(record)
            if refused:
                self._reply(http, *refused)
                return
            lines: list[bytes] = []
            if since in ("", "0"):
                position = self._rv  # "Any" / "most recent": the current state as synthetic ADDED events
                lines = [_line("ADDED", json.dumps(o)) for (g, p, ns, _), o in sorted(self.objects.items(), key=lambda kv: str(kv[0]))
                         if g == record.group and p == record.resource
                         and (record.namespace is None or ns == record.namespace) and _matches(o, selector)]
            else:
                position = int(since)
            epoch = self._epoch
        http.send_response(200)
        http.send_header("Content-Type", "application/json")
        http.send_header("Transfer-Encoding", "chunked")
        http.send_header("Connection", "close")
        http.end_headers()
        deadline = time.monotonic() + timeout
        try:
            while True:
                with self._lock:
                    if position < self._compacted_rv:
                        lines.append(_line("ERROR", json.dumps(_status(
                            410, "Expired", f"too old resource version: {position} ({self._compacted_rv})"))))
                        deadline = 0.0
                    else:
                        news = []
                        for event in reversed(self._events):
                            if event.rv <= position:
                                break
                            news.append(event)
                        for event in reversed(news):
                            position = event.rv
                            kind = event.seen_as(record.group, record.resource, record.namespace, selector)
                            if kind is not None:
                                lines.append(_line(kind, event.obj))
                        left = deadline - time.monotonic()
                        if not lines and not self._closing and left > 0:
                            if self._changed.wait(min(left, self.bookmark_interval_s)) or not bookmarks \
                                    or time.monotonic() >= deadline or epoch != self._epoch:
                                continue
                            # idle: a BOOKMARK (only metadata.resourceVersion) lets the client resume from here
                            lines.append(_line("BOOKMARK", json.dumps({"metadata": {"resourceVersion": str(position)}})))
                    closing = self._closing or epoch != self._epoch
                for line in lines:
                    http.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                http.wfile.flush()
                lines = []
                with self._lock:
                    self._watching[id(record)] = position
                    self._changed.notify_all()
                if closing or time.monotonic() >= deadline:
                    break
            http.wfile.write(b"0\r\n\r\n")
            http.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass  # the client went away
        finally:
            with self._lock:
                self._watching.pop(id(record), None)
                self._changed.notify_all()

    def _invalid(self, obj: dict) -> str | None:
        """The API server's structural validation against the CRD schema (None: valid)."""
        schema = self.schemas.get((obj.get("apiVersion"), obj.get("kind")))
        if schema is None:
            return None
        import jsonschema

        try:
            jsonschema.validate(obj, schema)
        except jsonschema.ValidationError as exc:
            return f"{'.'.join(str(p) for p in exc.absolute_path) or '<root>'}: {exc.message}"
        return None

    def _webhook(self, resource: str, before: dict | None, after: dict) -> str | None:
        """Knative's admission webhooks, as far as the project relies on them (knative_rules)."""
        if resource == "services":
            return knative_rules.service_denial(after) or knative_rules.pod_spec_denial(after, self.config_features)
        if resource == "revisions" and before is not None and before.get("spec") != after.get("spec"):
            return "Revision spec is immutable"
        if resource == MAPPINGS[2]:
            ref = (after.get("spec") or {}).get("ref") or {}
            if ref.get("namespace") not in (None, "", after["metadata"]["namespace"]):
                return f"spec.ref.namespace: must be the mapping's own namespace {after['metadata']['namespace']!r}"
            if not ref.get("name") or not ref.get("kind"):
                return "spec.ref: missing field(s): kind, name"
            return None
        if resource in ("revisions", "podautoscalers"):
            return knative_rules.revision_annotation_denial(after.get("metadata", {}).get("annotations") or {})
        return None

    def _create(self, record: Recorded) -> tuple[int, dict]:
        """POST: the object as sent; a Knative Service is checked by the webhook, then its
        Configuration's first Revision is stamped out from the template (labels and annotations
        from the template only) and reported Ready."""
        body = copy.deepcopy(record.body or {})
        name = (body.get("metadata") or {}).get("name")
        if not name:
            return 400, _status(400, "BadRequest", "metadata.name: Required value")
        if record.namespace is not None:
            body["metadata"]["namespace"] = record.namespace
        key = (record.group, record.resource, record.namespace, name)
        if key in self.objects:
            return 409, _status(409, "AlreadyExists", f'{record.resource}.{record.group} "{name}" already exists')
        denial = self._webhook(record.resource, None, body)
        if denial:
            return 400, _status(400, "BadRequest", f"admission webhook denied the request: {denial}")
        if record.group == SERVING[0] and record.resource == "services":
            body["metadata"]["generation"] = 1
            revision = f"{name}-00001"
            body["status"] = {"url": f"http://{name}.{record.namespace}.{self.domain}", "latestReadyRevisionName": revision,
                              "traffic": [{"revisionName": revision, "percent": 100, "latestRevision": True}],
                              "conditions": [{"type": "Ready", "status": "True"}]}
            stored = self.put_object(record.group, record.resource, record.namespace, body)
            template = (body.get("spec") or {}).get("template") or {}
            self.add_revision(record.namespace, name, revision, (template.get("metadata") or {}).get("annotations") or {})
            return 201, copy.deepcopy(stored)
        return 201, copy.deepcopy(self.put_object(record.group, record.resource, record.namespace, body))

    @staticmethod
    def _reply(http: BaseHTTPRequestHandler, status: int, payload: dict | bytes) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        http.send_response(status)
        http.send_header("Content-Type", "application/json")
        http.send_header("Content-Length", str(len(data)))
        http.end_headers()
        http.wfile.write(data)


@dataclass
class _Event:
    """One write, as the watch cache keeps it: the object after it (JSON), and the labels
    before and after (None: the object did not exist), for label-selector watches."""
    rv: int
    kind: str
    key: tuple
    obj: str
    labels_before: dict | None
    labels_after: dict | None
    delivered: bool = True

    def seen_as(self, group: str, plural: str, namespace: str | None, selector: dict[str, str]) -> str | None:
        """The event type a watch of (group, plural, namespace, selector) receives (None: none)."""
        g, p, ns, _ = self.key
        if not self.delivered or g != group or p != plural or (namespace is not None and ns != namespace):
            return None
        was = self.labels_before is not None and all(self.labels_before.get(k) == v for k, v in selector.items())
        now = self.labels_after is not None and all(self.labels_after.get(k) == v for k, v in selector.items())
        if was and now:
            return self.kind
        if now:
            return "ADDED"
        if was:
            return "DELETED"
        return None


def _line(kind: str, obj: str) -> bytes:
    return ('{"type": "%s", "object": %s}\n' % (kind, obj)).encode()


def _flag(query: dict, name: str) -> bool:
    """A boolean query parameter as Go's strconv.ParseBool reads it (the client sends "True")."""
    return query.get(name, [""])[0] in ("1", "t", "T", "true", "True", "TRUE")


def _selector(query: dict) -> dict[str, str]:
    return dict(p.split("=", 1) for p in query.get("labelSelector", [""])[0].split(",") if "=" in p)


def _matches(obj: dict, selector: dict[str, str]) -> bool:
    labels = obj["metadata"].get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


def _merge(target: Any, patch: Any) -> Any:
    """JSON merge patch (RFC 7386): null deletes, objects merge, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(target, dict):
        target = {}
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = _merge(target.get(key), value)
    return target


def _status(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:2])
