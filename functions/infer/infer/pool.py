"""The model pool: many models in one server (MODEL_REPOSITORY), the second implementation of
the registry interface (`infer.model.ModelRegistry`), so that every protocol serves pooled
models exactly as it serves the one model of a one-model server.

- Ready once the repository manifest is verified (`infer.repository`) and the runtimes of the
  formats it serves are imported (so that the first load of each model is milliseconds, not the
  0.2 s of importing onnxruntime); no model is loaded then.
- A model loads on its first request (or a repository-API load), through the same gate and
  runtimes as one model (`ServedModel.load`: sha256 checked on the bytes loaded, ONNX without
  scikit-learn, a warm-up prediction), once: concurrent first requests wait for the one load
  in flight (single flight), for at most POOL_LOAD_WAIT_SECONDS, then get a retryable 503.
- Loaded models are kept within POOL_MEMORY_MB of estimated footprint, least recently used
  evicted first (before the new model loads, so the budget holds at the peak too).
- A refusal (sha256 mismatch, unreadable file, too big for the budget) is remembered and said
  by every request for that model, while the other models serve; a repository-API load
  retries it.

The footprint is an estimate, not a measurement: file size x a per-format factor + a fixed
per-model overhead (`footprint_bytes`). An RSS delta taken at load would charge the first model
for importing its runtime (onnxruntime: ~50 MB, scikit-learn: ~80 MB, shared by every later
model), would count whatever another thread allocated meanwhile, and would make eviction
depend on timing; the constants below were measured as the RSS per loaded session of the
example models (`make bench-pool` prints measured against estimated, so drift shows).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from . import json_log, metrics, routing
from .errors import BadRequest, ModelNotFound, ModelNotReady, ModelRefused, ModelUnavailable
from .model import ServedModel
from .runtime import modules
from .repository import Repository, RepositoryEntry, read_repository
from .settings import InferSettings

log = logging.getLogger("infer.pool")

# Per-model overhead and bytes in memory per byte of file, by format, set a little above what
# `make bench-pool` measured as the RSS per loaded model (100 copies of the example models in
# one pool): ONNX ~156 KiB per session of a 1-2 KB file (the graph, its optimized copy, the
# session's allocator and kernel state); joblib ~14 KiB per scikit-learn pipeline of a 2 KB
# pickle. skops files are zips of a JSON schema, larger than the objects they hold.
OVERHEAD_BYTES = {"onnx": 192 * 1024, "skops": 32 * 1024, "joblib": 32 * 1024, "mlflow": 32 * 1024}
BYTES_PER_FILE_BYTE = {"onnx": 3.0, "skops": 1.0, "joblib": 3.0, "mlflow": 3.0}
NOT_LOADED = "not loaded (loads on its first request, or POST /v2/repository/models/{name}/load)"
NO_MODEL_LABEL = "none"
"""The metrics label of a request that names no model of the repository (bounded label set)."""


def footprint_bytes(entry: RepositoryEntry) -> int:
    return int(OVERHEAD_BYTES.get(entry.format, 192 * 1024) + BYTES_PER_FILE_BYTE.get(entry.format, 3.0) * entry.size_bytes)


@dataclass
class _Slot:
    """One (name, version) of the repository and what the pool knows about it now."""

    entry: RepositoryEntry
    model: ServedModel
    state: str = "UNAVAILABLE"
    """Triton's vocabulary: READY, LOADING, UNAVAILABLE."""
    footprint: int = 0
    loading: threading.Event | None = None
    refused: str | None = None


class ModelPool:
    extensions = ("model_repository",)
    loads_on_demand = True

    def __init__(self, settings: InferSettings):
        self.settings = settings
        self.budget = int(settings.pool_memory_mb * 1024 * 1024)
        self.repository: Repository | None = None
        self.reason = "model repository is being verified"
        self._slots: dict[tuple[str, str | None], _Slot] = {}
        self._lru: OrderedDict[tuple[str, str | None], None] = OrderedDict()
        self._used = 0
        self._by_label: dict[str, str] = {}
        self._lock = threading.Lock()
        metrics.POOL_MEMORY_BUDGET.set(self.budget)

    # -- start ------------------------------------------------------------------------------
    def verify(self) -> bool:
        """Read and verify the manifest; on refusal stay up, not ready, and keep the reason."""
        assert self.settings.model_repository is not None
        try:
            repository = read_repository(self.settings.model_repository, self.settings.pool_formats,
                                         self.settings.repository_sha256)
        except ModelRefused as exc:
            self.reason = f"model repository refused: {exc}"
            json_log.event(log, "model repository refused", logging.ERROR, reason=str(exc))
            return False
        for module in {modules()[e.format] for e in repository.models.values() if e.refused is None}:
            module.warm()
        self._slots = {key: _Slot(entry, self._placeholder(entry, entry.refused), refused=entry.refused)
                       for key, entry in repository.models.items()}
        self._by_label = {name.lower(): name for name in repository.names}
        self.repository = repository
        self.reason = "ready"
        json_log.event(log, "model repository verified", root=str(repository.root), models=len(repository.models),
                       manifest_sha256=repository.manifest_sha256, pinned=repository.pinned,
                       budget_mb=self.settings.pool_memory_mb)
        return True

    def _placeholder(self, entry: RepositoryEntry, reason: str | None) -> ServedModel:
        """A not-ready model: what readiness and the index show until (and after) a load."""
        said = f"model {entry.name!r} is refused: {reason}" if reason else f"model {entry.name!r} is {NOT_LOADED}"
        return ServedModel(self._settings_for(entry), dict(entry.entry), reason=said)

    def _settings_for(self, entry: RepositoryEntry) -> InferSettings:
        return self.settings.for_entry(entry.path, entry.format, entry.sha256, entry.name, entry.version)

    # -- the registry interface ---------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.repository is not None

    def require_ready(self) -> None:
        if self.repository is None:
            raise ModelNotReady(self.reason, self.settings.retry_after_s)

    @property
    def names(self) -> list[str]:
        return self.repository.names if self.repository else []

    def __iter__(self):
        return iter([s.model for s in self._slots.values() if s.state == "READY"])

    def label(self, name: str | None) -> str:
        return name if self.repository is not None and name in self.repository.by_name else NO_MODEL_LABEL

    def route_name(self, request: Any) -> str | None:
        if self.repository is None:
            return None
        return routing.model_name(request.headers, self.repository.by_name, self._by_label)

    def may_block(self, name: str | None) -> bool:
        """A request for a model of the repository that is not loaded now may wait for its load."""
        if self.repository is None or name is None:
            return False
        return any(self._slots[(name, v)].state != "READY" for v in self.repository.versions(name))

    def choose(self, request: Any) -> ServedModel:
        self.require_ready()
        name = self.route_name(request)
        if name is None:
            given = routing.explicit_name(request.headers)
            if given is not None:
                raise ModelNotFound(f"model {given!r} (X-Model-Name) is not in this repository; it serves "
                                    f"{routing.listing(self.names)}")
            raise BadRequest(routing.how_to_choose(request.headers, self.names))
        return self.get(name)

    def peek(self, name: str, version: str | None = None) -> ServedModel:
        self.require_ready()
        slot = self._slot(name, version)
        if slot.state == "LOADING":
            raise ModelNotReady(f"model {name!r} is loading", self.settings.retry_after_s)
        return slot.model

    def get(self, name: str, version: str | None = None) -> ServedModel:
        """The loaded model, loading it first when it is not (single flight, bounded wait)."""
        self.require_ready()
        return self._ensure(self._slot(name, version), for_client=True)

    # -- the repository extension -------------------------------------------------------------
    def index(self, ready_only: bool = False) -> list[dict]:
        self.require_ready()
        rows = []
        for (name, version), slot in sorted(self._slots.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
            if ready_only and slot.state != "READY":
                continue
            row = {"name": name}
            if version is not None:
                row["version"] = version
            row.update(state=slot.state, reason="" if slot.state == "READY" else self._reason_of(slot))
            rows.append(row)
        return rows

    def load(self, name: str) -> ServedModel:
        """Load (or keep loaded) the served version of `name`; a remembered refusal is retried."""
        self.require_ready()
        slot = self._slot(name, None)
        with self._lock:
            if slot.refused is not None and slot.entry.refused is None and slot.loading is None:
                slot.refused = None  # retry: the file may have been fixed
                slot.model = self._placeholder(slot.entry, None)
        return self._ensure(slot, for_client=False)

    def unload(self, name: str) -> None:
        self.require_ready()
        self._slot(name, None)  # 404 for a name the repository does not list
        with self._lock:
            for (slot_name, _), slot in self._slots.items():
                if slot_name == name and slot.state == "READY":
                    self._evict(slot, "unload")

    # -- internals -----------------------------------------------------------------------------
    def _slot(self, name: str, version: str | None) -> _Slot:
        assert self.repository is not None
        versions = self.repository.versions(name)
        if not versions:
            raise ModelNotFound(f"model {name!r} is not in this repository; it serves {routing.listing(self.names)}")
        if version is None:
            version = versions[-1]
        elif version not in versions:
            have = ", ".join(repr(v) for v in versions if v is not None) or "no versions"
            raise ModelNotFound(f"model {name!r} has no version {version!r} (it has {have})")
        return self._slots[(name, version)]

    def _reason_of(self, slot: _Slot) -> str:
        if slot.state == "LOADING":
            return "loading"
        return slot.refused or slot.model.reason

    def _ensure(self, slot: _Slot, for_client: bool) -> ServedModel:
        key = (slot.entry.name, slot.entry.version)
        arrived = time.perf_counter()
        with self._lock:
            if slot.state == "READY":
                self._lru.move_to_end(key)
                return slot.model
            if slot.refused is not None:
                raise ModelUnavailable(f"model {slot.entry.name!r} is refused: {slot.refused}", self.settings.retry_after_s)
            leader = slot.loading is None
            if leader:
                slot.loading = threading.Event()
                slot.state = "LOADING"
                try:
                    self._make_room(slot)
                except ModelNotReady:
                    slot.loading, slot.state = None, "UNAVAILABLE"
                    raise
                except ModelRefused as exc:
                    done, slot.loading = slot.loading, None
                    self._refuse(slot, str(exc))
                    metrics.POOL_LOADS.labels(slot.entry.name, "refused").inc()
                    done.set()
                    raise ModelUnavailable(f"model {slot.entry.name!r} is refused: {exc}", self.settings.retry_after_s) from None
            done = slot.loading
        try:
            if leader:
                self._load(slot)
            elif not done.wait(self.settings.pool_load_wait_s):
                raise ModelNotReady(
                    f"model {slot.entry.name!r} is still loading after {self.settings.pool_load_wait_s:g} s; retry",
                    self.settings.retry_after_s,
                )
        finally:
            if for_client:  # a model-load wait, answered or not
                metrics.POOL_LOAD_WAIT.labels(slot.entry.name).observe(time.perf_counter() - arrived)
        with self._lock:
            if slot.state == "READY":
                self._lru.move_to_end(key)
                return slot.model
            model = slot.model
        if slot.refused is not None:
            raise ModelUnavailable(f"model {slot.entry.name!r} is refused: {slot.refused}", self.settings.retry_after_s)
        raise ModelNotReady(model.reason, self.settings.retry_after_s)  # evicted between its load and now

    def _make_room(self, slot: _Slot) -> None:
        """Reserve the slot's footprint, evicting least recently used models first (lock held)."""
        need = footprint_bytes(slot.entry)
        if need > self.budget:
            raise ModelRefused(f"its estimated footprint of {need / 2**20:.2f} MB is over POOL_MEMORY_MB "
                               f"({self.settings.pool_memory_mb:g} MB)")
        while self._used + need > self.budget and self._lru:
            victim = self._slots[next(iter(self._lru))]
            self._evict(victim, "lru")
        if self._used + need > self.budget:
            raise ModelNotReady(
                f"the memory budget is held by models loading now; retry (model {slot.entry.name!r})",
                self.settings.retry_after_s,
            )
        slot.footprint = need
        self._used += need
        self._publish_memory()

    def _load(self, slot: _Slot) -> None:
        entry = slot.entry
        model = ServedModel(self._settings_for(entry), dict(entry.entry))
        started = time.perf_counter()
        ok = False
        try:
            ok = model.load(log_loaded=False)
        finally:
            elapsed = time.perf_counter() - started
            with self._lock:
                if ok:
                    slot.model, slot.state, slot.refused = model, "READY", None
                    self._lru[(entry.name, entry.version)] = None
                    metrics.POOL_MODEL_MEMORY.labels(entry.name).set(slot.footprint)
                else:
                    self._used -= slot.footprint
                    slot.footprint = 0
                    self._refuse(slot, model.reason.removeprefix("model refused: "), logged=True)
                metrics.POOL_LOADS.labels(entry.name, "loaded" if ok else "refused").inc()
                metrics.POOL_LOAD_DURATION.labels(entry.name).observe(elapsed)
                self._publish_memory()
                done, slot.loading = slot.loading, None
            if done is not None:
                done.set()
        if ok:
            json_log.event(log, "pool model loaded", model=entry.name, version=entry.version, format=entry.format,
                           path=str(model.artifact.path) if model.artifact else entry.path, sha256=entry.sha256,
                           load_seconds=round(elapsed, 4), footprint_bytes=slot.footprint,
                           memory_used_bytes=self._used)

    def _refuse(self, slot: _Slot, reason: str, logged: bool = False) -> None:
        """`logged`: the load already logged the refusal (ServedModel.load): one line per event."""
        slot.refused, slot.state = reason, "UNAVAILABLE"
        slot.model = self._placeholder(slot.entry, reason)
        if not logged:
            json_log.event(log, "pool model refused", logging.ERROR, model=slot.entry.name,
                           version=slot.entry.version, reason=reason)

    def _evict(self, slot: _Slot, reason: str) -> None:
        """Drop the pool's reference (lock held); requests already holding the model finish on it."""
        key = (slot.entry.name, slot.entry.version)
        self._lru.pop(key, None)
        self._used -= slot.footprint
        slot.footprint, slot.state = 0, "UNAVAILABLE"
        why = "unloaded" if reason == "unload" else "evicted (least recently used, to stay within POOL_MEMORY_MB)"
        slot.model = ServedModel(self._settings_for(slot.entry), dict(slot.entry.entry),
                                 reason=f"model {slot.entry.name!r} is {why}; it loads again on its next request")
        metrics.POOL_EVICTIONS.labels(slot.entry.name, reason).inc()
        metrics.POOL_MODEL_MEMORY.labels(slot.entry.name).set(0)
        self._publish_memory()
        json_log.event(log, "pool model evicted", model=slot.entry.name, version=slot.entry.version, reason=reason)

    def _publish_memory(self) -> None:
        metrics.POOL_MEMORY_USED.set(self._used)
        metrics.POOL_MODELS_LOADED.set(len(self._lru))

