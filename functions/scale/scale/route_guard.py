"""The pool's routes between events: a dedicated Service that starts going moves its models back
to the pool at once, not at the next forecast event (a minute later).

Why a watch and not only the per-event plan (pool_placement.py): a model's host routed to a
Service being deleted reaches pods only while the Service's finalizer (ROUTED_FINALIZER) holds
it, and without that finalizer (deleted with `--cascade=foreground`, or before the function first
saw it) the host reaches nothing until its mapping is re-pointed. The watch-fed cache
(kube_cache.py) already streams the namespace's opted-in Services; this listens to it:
- MODIFIED with a new `deletionTimestamp` (deleted, held by a finalizer: its pods still serve):
  load each model routed to it into the pool, re-point the mapping, wait for the mapping to be
  programmed, then release the finalizer. When the pool has no ready pod yet, the next event
  raises its min-scale (the plan's floor for a move in) and the Service serves meanwhile; the
  move is looked at again every few seconds, so it happens once a pool pod is up;
- DELETED (gone: its route reaches nothing): re-point at once (a cold pool buffers in the
  activator and loads the model on its first request).
Each move is a counted fallback (`scale_placement_fallbacks_total`) and a warning log line with
`trigger: watch`. A Service whose Ready turns False is left to the plan's bound
(POOL_NOT_READY_SECONDS): a revision failing for a moment is not a reason to move.

It acts only in namespaces the last event placed (`PoolPlacement.armed`), not in dry run, with
the pool, its URL and the API path that event used; the work runs in one thread of its own, never
in the informer's. Both this and the next event may move the same mapping: the patch carries the
resourceVersion read and a 409 that finds the pool already there is success (knative_api).
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from fncommon import json_log

from . import metrics
from .knative_api import SERVING, ApiSkip, ApiTransient, KnativeApi
from .placement import POOL
from .pool_client import PoolError
from .pool_placement import (DEDICATED_ANNOTATION, MODEL_LABEL, ROUTED_FINALIZER, PoolPlacement, _ready_pods,
                             _settled)

log = logging.getLogger("scale.route_guard")


class RouteGuard:
    def __init__(self, api: KnativeApi, placement: PoolPlacement, settle_wait_s: float = 30.0,
                 retry_s: float = 2.0, retries: int = 150):
        self.api = api
        self.placement = placement
        self.settle_wait_s = settle_wait_s
        self.retry_s = retry_s
        self.retries = retries
        """A deferred move is looked at again every `retry_s`, `retries` times (5 minutes), then
        left to the events' plan."""
        self._queue: queue.Queue[tuple[str, str, bool, int] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.reactions = 0
        if api.cache is not None:  # API_READS=list has no watch: the events' plan alone then
            api.cache.listen(SERVING[0], "services", self._on_event)

    def close(self) -> None:
        self._queue.put(None)

    def _on_event(self, kind: str, obj: dict, previous: dict | None) -> None:
        meta = obj.get("metadata") or {}
        namespace, name = meta.get("namespace"), meta.get("name")
        if namespace not in self.placement.armed or not name:
            return
        started = bool(meta.get("deletionTimestamp")) and not ((previous or {}).get("metadata") or {}).get("deletionTimestamp")
        if kind == "DELETED" or (kind == "MODIFIED" and started):
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._run, name="route guard", daemon=True)
                    self._thread.start()
            self._queue.put((namespace, name, kind == "DELETED", 0))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            namespace, service, gone, attempt = item
            try:
                deferred = self.react(namespace, service, gone)
            except Exception as exc:  # noqa: BLE001 - the next event's plan does the same work
                deferred = False
                json_log.event(log, "route guard failed", logging.WARNING, namespace=namespace, service=service,
                               reason=f"{type(exc).__name__}: {str(exc)[:300]}")
            if deferred and attempt < self.retries:
                # the pool has no pod yet (the next event raises its min-scale) or a load failed:
                # look again shortly rather than a minute later, while the Service still serves
                timer = threading.Timer(self.retry_s, self._queue.put, args=((namespace, service, gone, attempt + 1),))
                timer.daemon = True
                timer.start()

    def react(self, namespace: str, service: str, gone: bool) -> bool:
        """Move the models routed to `service` back to the pool. True when a move was deferred
        (the Service still serves, the pool cannot take the model yet): worth another look."""
        armed = self.placement.armed.get(namespace)
        if armed is None:
            return False
        routed = [m for m in self.api.list_mappings(namespace)
                  if (m["metadata"].get("labels") or {}).get(MODEL_LABEL)
                  and (m["metadata"].get("annotations") or {}).get(DEDICATED_ANNOTATION) == service
                  and ((m.get("spec") or {}).get("ref") or {}).get("name") == service]
        if not routed:
            return False
        self.reactions += 1
        pools = {s["metadata"]["name"]: s for s in self.api.list_services(namespace, armed.opt_in_label)}
        pool = pools.get(armed.pool)
        if pool is None:
            return False
        targets = {t["metadata"]["name"]: t for t in self.api.list_targets(namespace, armed.legacy)}
        warm = _ready_pods(pool, targets) > 0
        pool_url = (pool.get("status") or {}).get("url") or armed.pool_url
        moved: list[str] = []
        deferred = False
        for mapping in routed:
            model, host = mapping["metadata"]["labels"][MODEL_LABEL], mapping["metadata"]["name"]
            if not gone:  # its pods still serve: the pool takes the model only once it holds it
                if not warm:
                    json_log.event(log, "move deferred", namespace=namespace, model=model, trigger="watch",
                                   reason=f"{service} is being deleted, the pool has no ready pod yet: the next "
                                          "event raises its min-scale; the Service serves meanwhile")
                    deferred = True
                    continue
                try:
                    self.placement.pool.load(pool_url, model)
                except PoolError as exc:
                    json_log.event(log, "move deferred", logging.WARNING, namespace=namespace, model=model,
                                   trigger="watch", reason=f"pre-load failed: {exc}")
                    deferred = True
                    continue
            try:
                self.api.repoint_mapping(namespace, host, service, armed.pool, mapping["metadata"].get("resourceVersion"))
            except (ApiSkip, ApiTransient) as exc:
                json_log.event(log, "move", logging.WARNING, namespace=namespace, model=model, applied=False,
                               fallback=True, trigger="watch", reason=f"route unchanged, the next event retries: {exc}")
                continue
            moved.append(host)
            metrics.MOVES.labels(namespace, POOL, "applied").inc()
            metrics.FALLBACKS.labels(namespace).inc()
            json_log.event(log, "move", logging.WARNING, namespace=namespace, model=model, applied=True, fallback=True,
                           trigger="watch", target=armed.pool, **{"from": "dedicated", "to": POOL},
                           reason=f"dedicated Service {service!r} " + ("is gone" if gone else "is being deleted")
                                  + ": back to the pool")
        if moved and not gone and len(moved) == len(routed):
            self._release(namespace, service, moved)
        return deferred

    def _release(self, namespace: str, service: str, hosts: list[str]) -> None:
        """The Service's finalizer off once every moved mapping is programmed (the gateways route
        to the pool): until then its pods answer the hosts that still reach them."""
        deadline = time.monotonic() + self.settle_wait_s
        while time.monotonic() < deadline:
            mappings = {m["metadata"]["name"]: m for m in self.api.list_mappings(namespace)}
            if all(h in mappings and _settled(mappings[h]) for h in hosts):
                break
            time.sleep(0.2)
        else:
            return  # the next event releases it once they are
        armed = self.placement.armed.get(namespace)
        if armed is None:
            return
        ksvc = next((s for s in self.api.list_services(namespace, armed.opt_in_label)
                     if s["metadata"]["name"] == service), None)
        if ksvc is None or ROUTED_FINALIZER not in (ksvc["metadata"].get("finalizers") or []):
            return
        finalizers = [f for f in ksvc["metadata"]["finalizers"] if f != ROUTED_FINALIZER]
        try:
            written = self.api.set_finalizers(namespace, service, finalizers, ksvc["metadata"].get("resourceVersion"))
        except (ApiSkip, ApiTransient) as exc:
            json_log.event(log, "deletion hold", logging.WARNING, namespace=namespace, service=service,
                           outcome="failed", trigger="watch", reason=str(exc))
            return
        outcome = "conflict" if written is None else "released"
        metrics.DELETION_HOLDS.labels(namespace, outcome).inc()
        json_log.event(log, "deletion hold", namespace=namespace, service=service, outcome=outcome,
                       terminating=True, trigger="watch")
