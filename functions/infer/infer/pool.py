"""The model pool: many models in one server (MODEL_REPOSITORY), the second implementation of
the registry interface (`infer.registry.Registry`; `infer.model.ModelRegistry` is the first), so
that every protocol serves pooled models exactly as it serves the one model of a one-model server.

- Ready once the repository manifest is verified (`infer.repository`: from the manifest's text,
  so 10,000 entries verify in well under a second) and the runtimes of the formats it serves are
  imported; no model is loaded then.
- A model loads on its first request (or a control-plane load), through the same gate and
  runtimes as one model (`ServedModel.load`: sha256 checked on the bytes loaded, ONNX without
  scikit-learn, a warm-up prediction), once: concurrent first requests wait for the one load in
  flight (single flight), for at most POOL_LOAD_WAIT_SECONDS, then get a retryable 503. A load
  runs on its own thread with a deadline (POOL_LOAD_DEADLINE_SECONDS): one that never finishes
  is given up (its model refused until retried), and another load of it is not started while
  that thread lives, so a stuck load costs one thread, not the server's.
- Loaded models are kept within POOL_MEMORY_MB, least recently used evicted first. A load
  reserves an estimate first (file size x a per-format factor + a per-model overhead, or what
  the model took the last time), then is charged what it actually took: the process's resident
  memory before the load against its peak during the load and warm-up prediction (the kernel's
  high-water mark, VmHWM, restarted before each load), loads measured one at a time so that no
  load is charged another's. Memory freed meanwhile cannot make a charge smaller than the estimate; a
  request decoded meanwhile can make it larger (eviction then comes early, never late). A model
  that took more than the whole budget is refused and dropped.
- A request on a model's own host reaches only that model (POOL_ROUTING, `boundary`).
- The repository is polled (POOL_REPOSITORY_POLL_SECONDS): a changed manifest that verifies
  replaces the served one (new models serve, removed ones go, changed ones are unloaded and load
  the new bytes on their next request); one that does not verify is logged and counted and the
  last good one keeps serving.
- A refusal (sha256 mismatch, unreadable file, too big for the budget, deadline) is remembered
  and said by every request for that model, while the other models serve; a control-plane load
  (or a changed manifest entry) retries it. An unload during a load takes effect when it ends.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Iterator

from fncommon import json_log

from . import metrics, routing
from .errors import BadRequest, ModelNotFound, ModelNotReady, ModelRefused, ModelUnavailable
from .model import ServedModel
from .registry import Registry
from .runtime import modules
from .artifacts import MANIFEST
from .repository import Repository, RepositoryEntry, read_repository
from .settings import InferSettings

log = logging.getLogger("infer.pool")

# Per-model overhead and bytes in memory per byte of file, by format: the reservation made
# before a load (the charge after it is what the load took, see the module docstring), set a
# little above what `make bench-pool` measured as the RSS per loaded model of the examples.
OVERHEAD_BYTES = {"onnx": 192 * 1024, "skops": 32 * 1024, "joblib": 32 * 1024, "mlflow": 32 * 1024}
BYTES_PER_FILE_BYTE = {"onnx": 3.0, "skops": 1.0, "joblib": 3.0, "mlflow": 3.0}
HOST_HEADERS = ("host", "k-original-host", "x-forwarded-host")
NOT_LOADED = "not loaded (loads on its first request, or a control-plane load)"
NO_MODEL_LABEL = "none"
"""The metrics label of a request that names no model of the repository (bounded label set)."""
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def footprint_bytes(entry: RepositoryEntry, size_bytes: int = 0) -> int:
    """The estimate a load reserves before it runs (`size_bytes`: the file's)."""
    return int(OVERHEAD_BYTES.get(entry.format, 192 * 1024) + BYTES_PER_FILE_BYTE.get(entry.format, 3.0) * size_bytes)


def resident_bytes() -> int:
    """This process's resident memory now (/proc/self/statm), 0 where there is none."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def reset_peak() -> None:
    """Restart the kernel's resident high-water mark (VmHWM) from now (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_resident_bytes() -> int:
    """The resident high-water mark since the last `reset_peak` (VmHWM), 0 where there is none."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


class SlotState(StrEnum):
    """Where one (name, version) of the repository is; the repository index reports it in
    Triton's vocabulary."""

    UNAVAILABLE = "UNAVAILABLE"
    """Not loaded: never asked for, evicted, unloaded or refused (`refused`, `why_not` say which)."""
    LOADING = "LOADING"
    """A load is in flight (`loading` is set when it ends); requests wait for it, bounded."""
    READY = "READY"
    """Loaded: `model` serves."""


@dataclass(slots=True)
class _Slot:
    """One (name, version) of the repository and what the pool knows about it now: ~0.2 KiB
    (plus its entry's) while not loaded."""

    entry: RepositoryEntry
    state: SlotState = SlotState.UNAVAILABLE
    model: ServedModel | None = None
    footprint: int = 0
    loading: threading.Event | None = None
    token: int = 0
    refused: str | None = None
    why_not: str | None = None
    """Why it is not loaded when it was (evicted, unloaded)."""
    unload_pending: bool = False
    charged: int = 0
    """What its last load took (the next load reserves it)."""
    loader: threading.Thread | None = None
    deadline: threading.Timer | None = None
    """The load's deadline; cancelled when the load ends (a sleeping timer is a thread)."""


class _Labels:
    """Host label -> model name: names are DNS labels, so a label names the model itself."""

    def __init__(self, names: Any):
        self._names = names

    def __contains__(self, label: object) -> bool:
        return label in self._names

    def __getitem__(self, label: str) -> str:
        return label


class ModelPool(Registry):
    extensions = ("model_repository",)
    loads_on_demand = True

    def __init__(self, settings: InferSettings):
        self.settings = settings
        self.budget = int(settings.pool_memory_mb * 1024 * 1024)
        self.routing = settings.pool_routing
        self.repository: Repository | None = None
        self.reason = "model repository is being verified"
        self._slots: dict[tuple[str, str | None], _Slot] = {}
        self._lru: OrderedDict[tuple[str, str | None], None] = OrderedDict()
        self._used = 0
        self._lock = threading.Lock()
        self._measure = threading.Condition(self._lock)
        self._measuring: int | None = None
        self._tokens = itertools.count(1)
        self._manifest_seen: tuple | None = None
        self._stop = threading.Event()
        self._background: list[Any] = []
        metrics.POOL_MEMORY_BUDGET.set(self.budget)
        metrics.cap_model_labels(settings.metric_models)

    # -- start ------------------------------------------------------------------------------
    def verify(self) -> bool:
        """Read and verify the manifest; on refusal stay up, not ready, and keep the reason."""
        assert self.settings.model_repository is not None
        seen = self._manifest_signature()
        try:
            repository = self._read()
        except ModelRefused as exc:
            self._manifest_seen = seen
            self.reason = f"model repository refused: {exc}"
            json_log.event(log, "model repository refused", logging.ERROR, reason=str(exc))
            return False
        self._manifest_seen = seen
        self._warm(repository)
        with self._lock:
            self._slots = {key: _Slot(entry, refused=entry.refused) for key, entry in repository.models.items()}
            self.repository = repository
        self.reason = "ready"
        metrics.POOL_REPOSITORY_MODELS.set(len(repository.models))
        json_log.event(log, "model repository verified", root=str(repository.root), models=len(repository.models),
                       manifest_sha256=repository.manifest_sha256, pinned=repository.pinned,
                       budget_mb=self.settings.pool_memory_mb)
        return True

    def _read(self) -> Repository:
        assert self.settings.model_repository is not None
        return read_repository(self.settings.model_repository, self.settings.pool_formats, self.settings.repository_sha256)

    @staticmethod
    def _warm(repository: Repository) -> None:
        for module in {modules()[e.format] for e in repository.models.values() if e.refused is None}:
            module.warm()

    def _manifest_signature(self) -> tuple | None:
        assert self.settings.model_repository is not None
        try:
            st = (self.settings.model_repository / MANIFEST).stat()
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def start_background(self, control_host: str = "0.0.0.0") -> None:
        """In the process that serves requests (after gunicorn's fork): the repository poll and
        the control-plane server. Idempotent."""
        if self._background:
            return
        if self.settings.pool_poll_s > 0:
            thread = threading.Thread(target=self._poll, name="pool-repository-poll", daemon=True)
            thread.start()
            self._background.append(thread)
        if self.settings.pool_control_port:
            from .control import serve_control

            self._background.append(serve_control(self, control_host, self.settings.pool_control_port))

    def stop_background(self) -> None:
        self._stop.set()
        for item in self._background:
            if hasattr(item, "shutdown"):
                item.shutdown()

    def _poll(self) -> None:
        while not self._stop.wait(self.settings.pool_poll_s):
            try:
                self.refresh()
            except Exception:  # the poll must outlive any surprise; the next one tries again
                log.exception("repository poll failed")

    def refresh(self) -> bool:
        """Apply a changed manifest (True when the served repository changed)."""
        seen = self._manifest_signature()
        if seen == self._manifest_seen:
            return False
        self._manifest_seen = seen
        try:
            repository = self._read()
        except ModelRefused as exc:
            metrics.POOL_REPOSITORY_RELOADS.labels("refused").inc()
            if self.repository is None:
                self.reason = f"model repository refused: {exc}"
            json_log.event(log, "model repository change refused", logging.ERROR, reason=str(exc),
                           serving=self.repository.manifest_sha256 if self.repository else None)
            return False
        if self.repository is not None and repository.manifest_sha256 == self.repository.manifest_sha256:
            return False
        self._warm(repository)
        added, removed, changed = self._apply(repository)
        metrics.POOL_REPOSITORY_RELOADS.labels("applied").inc()
        metrics.POOL_REPOSITORY_MODELS.set(len(repository.models))
        self.reason = "ready"
        json_log.event(log, "model repository changed", manifest_sha256=repository.manifest_sha256,
                       models=len(repository.models), added=len(added), removed=len(removed), changed=len(changed),
                       examples=[f"{n}:{v}" for n, v in (added + removed + changed)[:10]])
        return True

    def _apply(self, repository: Repository) -> tuple[list, list, list]:
        with self._lock:
            old = self._slots
            new: dict[tuple[str, str | None], _Slot] = {}
            added: list[tuple[str, str | None]] = []
            removed: list[tuple[str, str | None]] = []
            changed: list[tuple[str, str | None]] = []
            for key, entry in repository.models.items():
                slot = old.get(key)
                if slot is not None and slot.entry == entry:
                    new[key] = slot
                    continue
                (changed if slot is not None else added).append(key)
                if slot is not None:
                    self._retire(slot, "changed")
                new[key] = _Slot(entry, refused=entry.refused)
            for key, slot in old.items():
                if key not in repository.models:
                    removed.append(key)
                    self._retire(slot, "removed")
            self._slots = new
            self.repository = repository
        return added, removed, changed

    def _retire(self, slot: _Slot, reason: str) -> None:
        """A slot the repository no longer serves as it is (lock held): unloaded now, or, when
        it is loading, when its load ends (the load then finds itself stale)."""
        if slot.state == SlotState.READY:
            self._evict(slot, reason)
        elif slot.loading is not None:
            done, slot.loading, slot.state = slot.loading, None, SlotState.UNAVAILABLE
            slot.why_not = f"model {slot.entry.name!r} changed in the repository while it loaded; retry"
            done.set()
        slot.token = -1  # a load in flight is stale: its end releases its reservation

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

    def __iter__(self) -> Iterator[ServedModel]:
        return iter([s.model for s in list(self._slots.values()) if s.state == SlotState.READY and s.model is not None])

    def label(self, name: str | None) -> str:
        if self.repository is None or name not in self.repository.by_name:
            return NO_MODEL_LABEL
        return metrics.model_label(name)

    def boundary(self, headers: Any) -> str | None:
        """The model whose host this request came on, or None (POOL_ROUTING `open`, or hosts
        that name no model). Every header that carries the host the client called counts:
        `Host` (what the gateway routed on), `K-Original-Host` (Knative's: the host before a
        DomainMapping or the activator rewrote it, knative/networking's OriginalHostHeader) and
        `X-Forwarded-Host` (a proxy's). Naming a model can only narrow what a request reaches,
        so a header a client forged cannot widen it; two of them naming different models is a
        404, and so is another model named by X-Model-Name or the path (`DataPlane`)."""
        if self.repository is None or self.routing == "open":
            return None
        by_name = self.repository.by_name
        named = {label for label in (routing.host_label(headers.get(h, "")) for h in HOST_HEADERS) if label in by_name}
        if len(named) > 1:
            raise ModelNotFound("the request's host headers name different models")
        bound = named.pop() if named else None
        if bound is None:
            if self.routing == "host-only":
                raise ModelNotFound("this host names no model: call the model's own host (<model>.<namespace>.<domain>)")
            return None
        given = routing.explicit_name(headers)
        if given is not None and given != bound:
            raise ModelNotFound(f"model {given[:80]!r} (X-Model-Name) is not served on this host")
        return bound

    def route_name(self, request: Any) -> str | None:
        if self.repository is None:
            return None
        bound = getattr(request, "bound", None)
        if bound is not None:
            return bound
        by_name = self.repository.by_name
        return routing.model_name(request.headers, by_name, _Labels(by_name))

    def may_block(self, name: str | None) -> bool:
        """A request for a model of the repository that is not loaded now may wait for its load."""
        if self.repository is None or name is None:
            return False
        slots = self._slots
        return any((s := slots.get((name, v))) is not None and s.state != SlotState.READY
                   for v in self.repository.versions(name))

    def choose(self, request: Any) -> ServedModel:
        self.require_ready()
        name = self.route_name(request)
        if name is None:
            given = routing.explicit_name(request.headers)
            if given is not None:
                raise ModelNotFound(f"model {given[:80]!r} (X-Model-Name) is not in this repository; it serves "
                                    f"{routing.listing(self.names)}")
            raise BadRequest(routing.how_to_choose(request.headers, self.names))
        return self.get(name)

    def peek(self, name: str, version: str | None = None) -> ServedModel:
        """The model when loaded; else the 503 that says why (never loads)."""
        self.require_ready()
        slot = self._slot(name, version)
        model = slot.model
        if slot.state == SlotState.READY and model is not None:
            return model
        if slot.refused is not None:
            raise ModelUnavailable(f"model {name!r} is refused: {slot.refused}", self.settings.retry_after_s)
        raise ModelNotReady(self._reason_of(slot), self.settings.retry_after_s)

    def get(self, name: str, version: str | None = None) -> ServedModel:
        """The loaded model, loading it first when it is not (single flight, bounded wait)."""
        self.require_ready()
        return self._ensure(self._slot(name, version), for_client=True)

    # -- the repository extension (served on the control port only) -------------------------
    def index(self, ready_only: bool = False) -> list[dict]:
        self.require_ready()
        rows = []
        slots = self._slots
        items = [(key, slots[key]) for key in list(self._lru) if key in slots] if ready_only else slots.items()
        for (name, version), slot in sorted(items, key=lambda kv: (kv[0][0], str(kv[0][1]))):
            if ready_only and slot.state != SlotState.READY:
                continue
            row = {"name": name}
            if version is not None:
                row["version"] = version
            row.update(state=slot.state.value, reason="" if slot.state == SlotState.READY else self._reason_of(slot))
            rows.append(row)
        return rows

    def load(self, name: str) -> ServedModel:
        """Load (or keep loaded) the served version of `name`; a remembered refusal is retried."""
        self.require_ready()
        slot = self._slot(name, None)
        with self._lock:
            if slot.refused is not None and slot.entry.refused is None and slot.loading is None:
                slot.refused = None  # retry: the file may have been fixed
        return self._ensure(slot, for_client=False)

    def unload(self, name: str) -> bool:
        """Unload every version of `name`; a version loading now is unloaded when its load ends
        (True when one is)."""
        self.require_ready()
        self._slot(name, None)  # 404 for a name the repository does not list
        pending = False
        with self._lock:
            for (slot_name, _), slot in self._slots.items():
                if slot_name != name:
                    continue
                if slot.state == SlotState.READY:
                    self._evict(slot, "unload")
                elif slot.state == SlotState.LOADING:
                    slot.unload_pending = pending = True
        return pending

    # -- internals -----------------------------------------------------------------------------
    def _slot(self, name: str, version: str | None) -> _Slot:
        assert self.repository is not None
        repository = self.repository
        versions = repository.versions(name)
        if not versions:
            raise ModelNotFound(f"model {name[:80]!r} is not in this repository; it serves {routing.listing(self.names)}")
        if version is None:
            version = versions[-1]
        elif version not in versions:
            have = ", ".join(repr(v) for v in versions if v is not None) or "no versions"
            raise ModelNotFound(f"model {name!r} has no version {version[:80]!r} (it has {have})")
        slot = self._slots.get((name, version))
        if slot is None:  # the repository changed between the two reads: retry
            raise ModelNotReady(f"model {name!r} is being updated from the repository", self.settings.retry_after_s)
        return slot

    def _reason_of(self, slot: _Slot) -> str:
        if slot.state == SlotState.LOADING:
            return "loading"
        if slot.refused:
            return f"model {slot.entry.name!r} is refused: {slot.refused}"
        return slot.why_not or f"model {slot.entry.name!r} is {NOT_LOADED}"

    def _ensure(self, slot: _Slot, for_client: bool) -> ServedModel:
        key = (slot.entry.name, slot.entry.version)
        arrived = time.perf_counter()
        with self._lock:
            if slot.state == SlotState.READY and slot.model is not None:
                self._lru.move_to_end(key)
                return slot.model
            if slot.refused is not None:
                raise ModelUnavailable(f"model {slot.entry.name!r} is refused: {slot.refused}", self.settings.retry_after_s)
            if slot.loading is None:
                if slot.loader is not None and slot.loader.is_alive():
                    raise ModelUnavailable(f"model {slot.entry.name!r}: its last load is still running past its "
                                           f"deadline; retry later", self.settings.retry_after_s)
                self._start_load(slot)
            done = slot.loading
        assert done is not None
        wait = self.settings.pool_load_wait_s if for_client else self.settings.pool_load_deadline_s + 1
        try:
            if not done.wait(wait):
                raise ModelNotReady(
                    f"model {slot.entry.name!r} is still loading after {wait:g} s; retry", self.settings.retry_after_s)
        finally:
            if for_client:  # a model-load wait, answered or not
                metrics.POOL_LOAD_WAIT.labels(metrics.model_label(slot.entry.name)).observe(time.perf_counter() - arrived)
        with self._lock:
            if slot.state == SlotState.READY and slot.model is not None:
                self._lru.move_to_end(key)
                return slot.model
        if slot.refused is not None:
            raise ModelUnavailable(f"model {slot.entry.name!r} is refused: {slot.refused}", self.settings.retry_after_s)
        raise ModelNotReady(self._reason_of(slot), self.settings.retry_after_s)  # unloaded between its load and now

    def _start_load(self, slot: _Slot) -> None:
        """Reserve, then load on a thread of its own under a deadline (lock held)."""
        try:
            self._make_room(slot)
        except ModelRefused as exc:
            self._refuse(slot, str(exc))
            metrics.POOL_LOADS.labels(metrics.model_label(slot.entry.name), "refused").inc()
            raise ModelUnavailable(f"model {slot.entry.name!r} is refused: {exc}", self.settings.retry_after_s) from None
        token = next(self._tokens)
        slot.token, slot.loading, slot.state, slot.unload_pending = token, threading.Event(), SlotState.LOADING, False
        slot.loader = threading.Thread(target=self._load, args=(slot, token), name=f"load-{slot.entry.name}", daemon=True)
        slot.loader.start()
        slot.deadline = threading.Timer(self.settings.pool_load_deadline_s, self._expire, (slot, token))
        slot.deadline.daemon = True
        slot.deadline.start()

    def _make_room(self, slot: _Slot) -> None:
        """Reserve the slot's footprint, evicting least recently used models first (lock held)."""
        need = slot.charged
        if not need or self.settings.pool_memory_accounting != "measured":
            try:
                size = (self.repository.root / slot.entry.path).stat().st_size if self.repository else 0
            except OSError:
                size = 0  # the load says why
            need = footprint_bytes(slot.entry, size)
        if need > self.budget:
            raise ModelRefused(f"its footprint of {need / 2**20:.2f} MB is over POOL_MEMORY_MB "
                               f"({self.settings.pool_memory_mb:g} MB)")
        self._evict_until(need)
        if self._used + need > self.budget:
            raise ModelNotReady(
                f"the memory budget is held by models loading now; retry (model {slot.entry.name!r})",
                self.settings.retry_after_s,
            )
        slot.footprint = need
        self._used += need
        self._publish_memory()

    def _evict_until(self, need: int, keep: _Slot | None = None) -> None:
        for key in list(self._lru):
            if self._used + need <= self.budget:
                return
            victim = self._slots.get(key)
            if victim is None or victim is keep:
                continue
            self._evict(victim, "lru")

    def _settings_for(self, entry: RepositoryEntry) -> InferSettings:
        assert self.settings.model_repository is not None
        source = f"the repository manifest {str(self.settings.model_repository / MANIFEST)!r}"
        return self.settings.for_entry(entry.path, entry.format, entry.sha256, entry.name, entry.version, source)

    def _load(self, slot: _Slot, token: int) -> None:
        """The loader thread: measured one at a time (resident memory before, peak after)."""
        entry = slot.entry
        with self._lock:
            while self._measuring is not None and slot.token == token:
                self._measure.wait(1.0)
            if slot.token != token:  # expired or retired while waiting to start
                if slot.token == -1:
                    self._release(slot)
                    if slot.deadline is not None:
                        slot.deadline.cancel()
                return
            self._measuring = token
        model = ServedModel(self._settings_for(entry), entry.entry)
        reset_peak()
        before = resident_bytes()
        started = time.perf_counter()
        ok = False
        try:
            ok = model.load(log_loaded=False)
        finally:
            took = max(0, max(resident_bytes(), peak_resident_bytes()) - before)
            elapsed = time.perf_counter() - started
            self._finish(slot, token, model, ok, took, elapsed)

    def _finish(self, slot: _Slot, token: int, model: ServedModel, ok: bool, took: int, elapsed: float) -> None:
        entry = slot.entry
        label = metrics.model_label(entry.name)
        with self._lock:
            if self._measuring == token:
                self._measuring = None
                self._measure.notify_all()
            if slot.token == token and slot.deadline is not None:
                slot.deadline.cancel()
                slot.deadline = None
            if slot.token != token:  # given up (deadline) or retired (repository change) meanwhile
                if slot.token == -1:
                    self._release(slot)
                json_log.event(log, "pool model load ended after it was given up", logging.WARNING, model=entry.name,
                               loaded=ok, load_seconds=round(elapsed, 4))
                return
            done, slot.loading = slot.loading, None
            charge = max(slot.footprint, took) if self.settings.pool_memory_accounting == "measured" else slot.footprint
            slot.charged = charge
            if ok and charge > self.budget:
                ok = False
                model.reason = (f"model refused: loading it took {charge / 2**20:.1f} MB of memory, over POOL_MEMORY_MB "
                                f"({self.settings.pool_memory_mb:g} MB)")
            if ok:
                self._used += charge - slot.footprint
                slot.footprint = charge
                slot.model, slot.state, slot.refused, slot.why_not = model, SlotState.READY, None, None
                self._lru[(entry.name, entry.version)] = None
                self._evict_until(0, keep=slot)
                metrics.POOL_MODEL_MEMORY.labels(label).set(charge)
            else:
                self._release(slot)
                self._refuse(slot, model.reason.removeprefix("model refused: "), logged=True)
            metrics.POOL_LOADS.labels(label, "loaded" if ok else "refused").inc()
            metrics.POOL_LOAD_DURATION.labels(label).observe(elapsed)
            if ok and slot.unload_pending:
                self._evict(slot, "unload")
            self._publish_memory()
        if done is not None:
            done.set()
        if ok:
            json_log.event(log, "pool model loaded", model=entry.name, version=entry.version, format=entry.format,
                           path=entry.path, sha256=entry.sha256, load_seconds=round(elapsed, 4),
                           footprint_bytes=charge, measured_bytes=took, memory_used_bytes=self._used,
                           unloaded_at_once=slot.unload_pending)

    def _expire(self, slot: _Slot, token: int) -> None:
        """The load's deadline: give it up if it is still running."""
        with self._lock:
            if slot.token != token or slot.loading is None:
                return
            slot.token = 0
            if self._measuring == token:
                self._measuring = None
                self._measure.notify_all()
            done, slot.loading = slot.loading, None
            self._release(slot)
            self._refuse(slot, f"its load did not finish within POOL_LOAD_DEADLINE_SECONDS "
                               f"({self.settings.pool_load_deadline_s:g} s)")
            metrics.POOL_LOADS.labels(metrics.model_label(slot.entry.name), "deadline").inc()
        done.set()

    def _release(self, slot: _Slot) -> None:
        self._used -= slot.footprint
        slot.footprint = 0
        self._publish_memory()

    def _refuse(self, slot: _Slot, reason: str, logged: bool = False) -> None:
        """`logged`: the load already logged the refusal (ServedModel.load): one line per event."""
        slot.refused, slot.state, slot.model = reason, SlotState.UNAVAILABLE, None
        if not logged:
            json_log.event(log, "pool model refused", logging.ERROR, model=slot.entry.name,
                           version=slot.entry.version, reason=reason)

    def _evict(self, slot: _Slot, reason: str) -> None:
        """Drop the pool's reference (lock held); requests already holding the model finish on it."""
        key = (slot.entry.name, slot.entry.version)
        self._lru.pop(key, None)
        self._used -= slot.footprint
        slot.footprint, slot.state, slot.model = 0, SlotState.UNAVAILABLE, None
        why = {"unload": "unloaded", "lru": "evicted (least recently used, to stay within POOL_MEMORY_MB)",
               "changed": "changed in the repository", "removed": "removed from the repository"}.get(reason, reason)
        slot.why_not = f"model {slot.entry.name!r} is {why}; it loads again on its next request"
        label = metrics.model_label(slot.entry.name)
        metrics.POOL_EVICTIONS.labels(label, reason).inc()
        metrics.POOL_MODEL_MEMORY.labels(label).set(0)
        self._publish_memory()
        json_log.event(log, "pool model evicted", model=slot.entry.name, version=slot.entry.version, reason=reason)

    def _publish_memory(self) -> None:
        metrics.POOL_MEMORY_USED.set(self._used)
        metrics.POOL_MODELS_LOADED.set(len(self._lru))
