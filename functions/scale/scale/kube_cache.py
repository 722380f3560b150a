"""A watch-fed cache of what the scale function reads from the cluster, as controllers keep one.

Why: reading every Knative Service and Revision of every namespace on each forecast event costs
O(services) API work per minute (13.8 s at 10,000 services, most of it decoding lists). A Kubernetes
controller lists once and then watches (client-go's Reflector; "Efficient detection of changes"
in the API concepts docs), and so does this: per (namespace, resource, label selector), one
Informer lists in pages (`limit`/`continue`, consistent at the list's resourceVersion), then
watches from that resourceVersion in a background thread, applying ADDED / MODIFIED / DELETED and
following BOOKMARKs. A `410 Gone` (history compacted past our resourceVersion) re-lists; so does
every `relist_s` (a missed event is corrected by the next list, as a Reflector's re-list does);
a watch that fails (connection lost, 403 where RBAC grants no `watch`) marks the cache unsynced,
so the next read pages a fresh list itself: the fallback where a watch cannot serve.

The cluster stays the truth for writes: a patch carries the resourceVersion read here and a 409
re-reads the live object (knative_api.patch_annotations), and the object a write returns is put
in the cache at once (`observe`), so the next event does not see our own write as missing.

Lifecycle under func-python: `start()` and `stop()` are plain calls on the server's event loop
(func_python.cloudevent: lifespan startup / shutdown). Informers are created on the first event
that reads a namespace (that event pays the list), run in daemon threads, and `close()` (from the
shim's `stop()`) stops them without waiting on the API server: it shuts their open responses.
Items are shared, never copied: callers must treat them as read-only.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from typing import Callable, Iterator

from fncommon import json_log

log = logging.getLogger("scale.kube_cache")

Lister = Callable[[], tuple[list[dict], str]]
"""A full (paged) list: the items and the list's resourceVersion."""
Listener = Callable[[str, dict, "dict | None"], None]
"""listener(type, object, previous): a watch event applied to the cache (ADDED / MODIFIED /
DELETED), with the object the cache held before it (None: none). Called in the informer's
thread, after the cache is updated: it must hand any slow work to a thread of its own."""
Watcher = Callable[[str, float, Callable[[object], None]], Iterator[tuple[str, dict]]]
"""watch(resourceVersion, timeout_s, on_open(response)) -> (type, object) events; raises
`Expired` on 410 Gone, anything else on other failures."""


class Expired(Exception):
    """410 Gone: the resourceVersion asked for is older than the server's history."""


class Informer:
    def __init__(self, name: str, lister: Lister, watcher: Watcher, relist_s: float, watch_timeout_s: float):
        self.name = name
        self._lister = lister
        self._watcher = watcher
        self.relist_s = relist_s
        self.watch_timeout_s = watch_timeout_s
        self._items: dict[str, dict] = {}
        self._rv = ""
        self._generation = 0
        """Bumped by every list: a watch started before it must not apply its events after it."""
        self._synced = False
        self._listed_at = 0.0
        self._lock = threading.Lock()
        self._list_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._response: object | None = None
        self.lists = 0
        self.expired = 0
        self.events = 0
        self.listeners: list[Listener] = []

    # -- reads -------------------------------------------------------------------------------
    def items(self) -> list[dict]:
        """Every cached object. Not synced (first use, a failed watch): list now, in the caller's
        thread, so API errors reach the caller as they would without a cache."""
        if not self._synced:
            self._relist()
        if self._thread is None and not self._stop.is_set():
            self._thread = threading.Thread(target=self._run, name=f"informer {self.name}", daemon=True)
            self._thread.start()
        with self._lock:
            return list(self._items.values())

    def observe(self, obj: dict) -> None:
        """Our own write's answer: newer than what the cache holds until its watch event arrives."""
        with self._lock:
            name = obj["metadata"]["name"]
            if _newer(obj, self._items.get(name)):
                self._items[name] = obj

    @property
    def synced(self) -> bool:
        return self._synced

    # -- list and watch ---------------------------------------------------------------------
    def _relist(self) -> None:
        with self._list_lock:
            started = time.perf_counter()
            items, rv = self._lister()
            with self._lock:
                self._items = {o["metadata"]["name"]: o for o in items}
                self._rv = rv
                self._generation += 1
                self._synced = True
                self._listed_at = time.monotonic()
            self.lists += 1
            # A list leaves tens of thousands of long-lived objects: frozen, CPython's cyclic
            # collector stops re-scanning them on every collection (a third of a steady event's
            # CPU at 10,000 services). They hold no cycles: replaced ones are freed by refcount.
            gc.freeze()
            json_log.event(log, "cache listed", logging.DEBUG, informer=self.name, items=len(items),
                           resource_version=rv, seconds=round(time.perf_counter() - started, 3))

    def _run(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            try:
                if not self._synced or time.monotonic() - self._listed_at >= self.relist_s:
                    self._relist()
                self._watch_once()
                backoff = 1.0
            except Expired:
                self.expired += 1
                json_log.event(log, "watch expired (410 Gone): re-listing", informer=self.name, resource_version=self._rv)
                self._synced = False
            except Exception as exc:  # connection lost, 403, 5xx: the next read lists for itself
                if self._stop.is_set():
                    return
                self._synced = False
                json_log.event(log, "watch failed", logging.WARNING, informer=self.name,
                               reason=f"{type(exc).__name__}: {str(exc)[:300]}", retry_in_s=backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 60.0)

    def _watch_once(self) -> None:
        with self._lock:
            rv, generation = self._rv, self._generation
        timeout = max(1.0, min(self.watch_timeout_s, self.relist_s - (time.monotonic() - self._listed_at)))
        for kind, obj in self._watcher(rv, timeout, self._opened):
            if self._stop.is_set():
                return
            with self._lock:
                if generation != self._generation:
                    return  # listed meanwhile (by a reader): watch again from that list
                meta = obj.get("metadata") or {}
                previous = self._items.get(meta.get("name", ""))
                applied = False
                if kind in ("ADDED", "MODIFIED"):
                    if _newer(obj, previous, equal=True):
                        self._items[meta["name"]] = obj
                        applied = True
                elif kind == "DELETED":
                    applied = self._items.pop(meta["name"], None) is not None
                if meta.get("resourceVersion"):
                    self._rv = meta["resourceVersion"]
                self.events += 1
            if applied:
                self._notify(kind, obj, previous)

    def _notify(self, kind: str, obj: dict, previous: dict | None) -> None:
        for listener in list(self.listeners):
            try:
                listener(kind, obj, previous)
            except Exception as exc:  # noqa: BLE001 - a listener's bug must not stop the watch
                json_log.event(log, "cache listener failed", logging.WARNING, informer=self.name,
                               reason=f"{type(exc).__name__}: {str(exc)[:300]}")

    def _opened(self, response: object) -> None:
        self._response = response

    def stop(self) -> None:
        self._stop.set()
        response = self._response
        if response is not None:
            for name in ("shutdown", "close"):
                try:
                    getattr(response, name)()
                    break
                except Exception:  # noqa: BLE001 - best effort: the thread is a daemon anyway
                    continue


class KubeCache:
    """The informers of one process, one per (group, version, namespace, plural, selector)."""

    def __init__(self, make_lister: Callable[..., Lister], make_watcher: Callable[..., Watcher],
                 relist_s: float, watch_timeout_s: float):
        self._make_lister = make_lister
        self._make_watcher = make_watcher
        self.relist_s = relist_s
        self.watch_timeout_s = watch_timeout_s
        self._informers: dict[tuple, Informer] = {}
        self._listeners: list[tuple[tuple[str, str], Listener]] = []
        self._lock = threading.Lock()

    def informer(self, group: str, version: str, namespace: str, plural: str, selector: str | None = None) -> Informer:
        key = (group, version, namespace, plural, selector or "")
        with self._lock:
            found = self._informers.get(key)
            if found is None:
                found = Informer(f"{plural}.{group}/{namespace}" + (f"?{selector}" if selector else ""),
                                 self._make_lister(group, version, namespace, plural, selector),
                                 self._make_watcher(group, version, namespace, plural, selector),
                                 self.relist_s, self.watch_timeout_s)
                found.listeners = [fn for (g, p), fn in self._listeners if (g, p) == (group, plural)]
                self._informers[key] = found
            return found

    def listen(self, group: str, plural: str, listener: Listener) -> None:
        """`listener` on every watch event of this kind, in any namespace (informers made later too)."""
        with self._lock:
            self._listeners.append(((group, plural), listener))
            for key, informer in self._informers.items():
                if (key[0], key[3]) == (group, plural):
                    informer.listeners.append(listener)

    def items(self, group: str, version: str, namespace: str, plural: str, selector: str | None = None) -> list[dict]:
        return self.informer(group, version, namespace, plural, selector).items()

    def observe(self, group: str, version: str, namespace: str, plural: str, obj: dict) -> None:
        """A written object, into every informer of its kind and namespace that holds it."""
        with self._lock:
            informers = [i for k, i in self._informers.items() if k[:4] == (group, version, namespace, plural)]
        for informer in informers:
            with informer._lock:
                held = obj["metadata"]["name"] in informer._items
            if held:
                informer.observe(obj)

    def stats(self) -> dict[str, int]:
        with self._lock:
            informers = list(self._informers.values())
        return {"informers": len(informers), "lists": sum(i.lists for i in informers),
                "expired": sum(i.expired for i in informers), "events": sum(i.events for i in informers)}

    def close(self) -> None:
        with self._lock:
            informers = list(self._informers.values())
        for informer in informers:
            informer.stop()


def _newer(obj: dict, held: dict | None, equal: bool = False) -> bool:
    """Whether `obj` may replace `held`. resourceVersions are opaque to clients, except that the
    API server hands out increasing integers (etcd revisions); when both parse, an older one never
    replaces a newer (our own write's answer racing its watch event), else the newcomer wins."""
    if held is None:
        return True
    try:
        new, old = int(obj["metadata"]["resourceVersion"]), int(held["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return True
    return new > old or (equal and new == old)
