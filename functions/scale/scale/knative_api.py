"""The Kubernetes API calls of the scale function, through the official `kubernetes` client (its
configuration, TLS and auth; the merge patches over kept-alive connections: merge_patch.py).

Reads go through a watch-fed cache (kube_cache.py; `API_READS=watch`, the default): each
namespace's opted-in Services and Revisions are listed once, in pages of `API_PAGE_SIZE`, then
watched; a steady event makes no read at all. `API_READS=list` pages a fresh list every event
instead (no watch). The calls, and RBAC grants exactly these (serving/rbac-scale.yaml):
- list and watch Knative Services in a namespace, by the opt-in label;
- list and watch the Revisions (PodAutoscalers on <= 1.20) of a namespace;
- get a Revision (after a conflict: its fresh resourceVersion);
- merge-patch a Revision's annotations (Knative >= 1.21), or a PodAutoscaler's (<= 1.20);
- get the knative-serving Namespace (KNATIVE_VERSION=auto reads its version label), and when it
  has none (a Knative Operator install labels no namespace), the `controller` Deployment there,
  which carries the same label on YAML and Operator installs alike.
And, with the model pool (serving/pool/, its own ClusterRole predictive-scale-placement):
- list the DomainMappings of a namespace (one call per namespace per event);
- merge-patch one mapping's `spec.ref.name`, with the resourceVersion read (a move between the
  pool and a dedicated Service is this one patch), and get it after a conflict;
- merge-patch a dedicated Service's `metadata.finalizers` (its own finalizer only, with the
  resourceVersion read): a Service deleted while a model is routed to it keeps serving until
  the route has moved back to the pool (pool_placement.py).

Errors are types: `ApiSkip` for what a retry cannot fix (403 RBAC, 404 gone, 400 webhook
denial: log and skip that service), `ApiTransient` when 5xx or connection failures outlast the
retries (the event is answered 503 so the broker retries it), `ApiExpired` (a transient) for a
410 Gone. A 409 re-reads the live object and retries the patch with its fresh resourceVersion.
"""

from __future__ import annotations

import http.client
import json
import time
from typing import Callable, Iterator, TypeVar

import orjson
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines
from urllib3.exceptions import HTTPError

from . import metrics
from .kube_cache import Expired, KubeCache
from .merge_patch import MergePatcher

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


class ApiExpired(ApiTransient):
    """410 Gone: a continue token (or a watch's resourceVersion) older than the server's history."""


class KnativeApi:
    def __init__(self, api_url: str | None, retries: int, backoff_s: float = 0.1, reads: str = "watch",
                 page_size: int = 500, relist_s: float = 600.0, watch_timeout_s: float = 300.0, connections: int = 8):
        if api_url:
            configuration = client.Configuration(host=api_url)
        else:
            configuration = client.Configuration()
            try:
                config.load_incluster_config(client_configuration=configuration)
            except config.ConfigException:
                config.load_kube_config(client_configuration=configuration)
        configuration.retries = False  # retries are ours: they re-read on 409
        configuration.connection_pool_maxsize = connections  # the writers' pool (scaler.py), and the watches
        api_client = client.ApiClient(configuration)
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self._patcher = MergePatcher(api_client)
        self.retries = retries
        self.backoff_s = backoff_s
        self.calls = 0
        self.page_size = page_size
        self.cache = KubeCache(self._lister, self._watcher, relist_s, watch_timeout_s) if reads == "watch" else None

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()
        self._patcher.close()

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
        return self._read(*SERVING, namespace, "services", f"{label[0]}={label[1]}")

    def list_targets(self, namespace: str, legacy: bool) -> list[dict]:
        group, version, plural = (*AUTOSCALING, "podautoscalers") if legacy else (*SERVING, "revisions")
        return self._read(group, version, namespace, plural)

    def _read(self, group: str, version: str, namespace: str, plural: str, selector: str | None = None) -> list[dict]:
        """The objects now: from the watch-fed cache, or a fresh paged list (API_READS=list)."""
        if self.cache is not None:
            return self.cache.items(group, version, namespace, plural, selector)
        return self.list_all(group, version, namespace, plural, selector)[0]

    def list_all(self, group: str, version: str, namespace: str, plural: str,
                 selector: str | None = None) -> tuple[list[dict], str]:
        """Every object, in pages of `page_size` (one consistent snapshot at the first page's
        resourceVersion); a continue token that expired (410) starts the list over, as
        client-go's pager does. Returns the items and the list's resourceVersion."""
        for _ in range(3):
            items: list[dict] = []
            token: str | None = None
            try:
                while True:
                    kwargs = {"limit": self.page_size, "label_selector": selector or ""}
                    if token:
                        kwargs["_continue"] = token
                    page = self._call(lambda: self._page(group, version, namespace, plural, kwargs), verb="list")
                    items += page.get("items") or []
                    token = (page.get("metadata") or {}).get("continue")
                    if not token:
                        return items, str((page.get("metadata") or {}).get("resourceVersion") or "")
            except ApiExpired:
                continue
        raise ApiExpired(f"{plural}.{group} in {namespace}: continue token expired three times in a row")

    def _page(self, group: str, version: str, namespace: str, plural: str, kwargs: dict) -> dict:
        """One list page, its body decoded by orjson (the generated client's `json.loads` and
        walk over the result cost about three times as much for a page of 500 objects); an
        answer that is not JSON is a failed request (retried, then transient)."""
        response = self.custom.list_namespaced_custom_object(group, version, namespace, plural,
                                                             _preload_content=False, **kwargs)
        try:
            page = orjson.loads(response.data)
        except orjson.JSONDecodeError:
            raise http.client.HTTPException(f"{plural}.{group} list answer is not JSON") from None
        finally:
            response.release_conn()
        if not isinstance(page, dict):
            raise http.client.HTTPException(f"{plural}.{group} list answer is not a JSON object")
        return page

    def _lister(self, group: str, version: str, namespace: str, plural: str, selector: str | None):
        return lambda: self.list_all(group, version, namespace, plural, selector)

    def _watcher(self, group: str, version: str, namespace: str, plural: str, selector: str | None):
        def watch(resource_version: str, timeout_s: float, opened: Callable[[object], None]) -> Iterator[tuple[str, dict]]:
            try:
                response = self._call(lambda: self.custom.list_namespaced_custom_object(
                    group, version, namespace, plural, label_selector=selector or "", watch=True,
                    resource_version=resource_version, allow_watch_bookmarks=True, timeout_seconds=int(timeout_s),
                    _preload_content=False, _request_timeout=(10, timeout_s + 30)), verb="watch")
            except ApiExpired as exc:
                raise Expired(str(exc)) from None
            opened(response)
            try:
                for line in iter_resp_lines(response):
                    event = orjson.loads(line)  # one per watched write: 10,000 at a first event
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            raise Expired(obj.get("message", "410 Gone"))
                        raise ApiTransient(f"watch error {obj.get('code')}: {obj.get('message')}")
                    yield kind, obj
            finally:
                response.release_conn()
        return watch

    def observe(self, group: str, version: str, namespace: str, plural: str, obj: dict | None) -> None:
        if self.cache is not None and obj:
            self.cache.observe(group, version, namespace, plural, obj)

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
                written = self._call(lambda: self._merge_patch(group, version, namespace, plural, revision, body),
                                     conflict_is_error=True, verb="patch")
                self.observe(group, version, namespace, plural, written)
                return written
            except _Conflict:
                if attempt == self.retries:
                    raise ApiTransient(f"{plural}/{revision}: still conflicting after {attempt + 1} attempts") from None
                time.sleep(self.backoff_s * (2 ** attempt))
                if not still_current():
                    return None
                rv = self.get_target(namespace, revision, legacy)["metadata"].get("resourceVersion")
        raise AssertionError("unreachable")

    def _merge_patch(self, group: str, version: str, namespace: str, plural: str, name: str, body: dict) -> dict:
        """One merge patch: over the writer thread's kept-alive connection (merge_patch.py), or
        through the generated client where that path does not apply (a proxy)."""
        if self._patcher.usable:
            return self._patcher.patch(group, version, namespace, plural, name, body)
        return self.custom.patch_namespaced_custom_object(group, version, namespace, plural, name, body)

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
                if exc.status == 410:
                    raise ApiExpired(_message(exc)) from None
                if exc.status in (400, 403, 404, 409, 422):
                    raise ApiSkip(exc.status, _message(exc)) from None
                failure = f"{exc.status}: {_message(exc)}"
            except (HTTPError, OSError, http.client.HTTPException) as exc:
                metrics.api_call(verb, "error", time.perf_counter() - started)
                failure = f"{type(exc).__name__}: {exc}"
            if attempt < self.retries:
                time.sleep(self.backoff_s * (2 ** attempt))
        raise ApiTransient(f"API server failing after {self.retries + 1} attempts: {failure}")

    # -- the model pool's routing ----------------------------------------------------------
    def list_mappings(self, namespace: str) -> list[dict]:
        return self._read(*MAPPINGS[:2], namespace, MAPPINGS[2])

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
                written = self._call(lambda: self._merge_patch(*MAPPINGS[:2], namespace, MAPPINGS[2], host, body),
                                     conflict_is_error=True, verb="patch")
                self.observe(*MAPPINGS[:2], namespace, MAPPINGS[2], written)
                return written
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


    def set_finalizers(self, namespace: str, service: str, finalizers: list[str], resource_version: str | None) -> dict | None:
        """Write a Knative Service's `metadata.finalizers` (the whole list: a merge patch replaces
        lists), carrying the resourceVersion read so that another controller's finalizer written
        meanwhile is never dropped: on 409 nothing is written and None is returned (the next
        event reads the fresh list and tries again)."""
        body: dict = {"metadata": {"finalizers": finalizers}}
        if resource_version is not None:
            body["metadata"]["resourceVersion"] = resource_version
        try:
            written = self._call(lambda: self._merge_patch(*SERVING, namespace, "services", service, body),
                                 conflict_is_error=True, verb="patch")
        except _Conflict:
            return None
        self.observe(*SERVING, namespace, "services", written)
        return written


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

