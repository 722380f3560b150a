"""Configuration of the inference server, read once from the environment at start."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping


class SettingsError(ValueError):
    """A configuration value that cannot be used; the server refuses to start serving."""


@dataclass(frozen=True)
class InferSettings:
    model_root: Path
    """MODEL_ROOT (default ./models). The only directory models may be loaded from: a joblib or
    pickle file is code, so anything outside it is refused, symlinks included."""

    model_path: str
    """MODEL_PATH (required unless MODEL_REPOSITORY is set). The artifact, relative to MODEL_ROOT (or absolute inside it): an
    `.onnx` file (the fast path: no scikit-learn in the process), a `.joblib`/`.pkl` file, a
    `.skops` file, or an MLflow sklearn model directory."""

    model_format: str
    """MODEL_FORMAT (default auto): onnx, joblib, skops, mlflow, or auto (by suffix / MLmodel
    file)."""

    model_sha256: str | None
    """MODEL_SHA256 (default: the entry in manifest.json beside the artifact or in MODEL_ROOT).
    Pickle-based artifacts load only when their sha256 matches this."""

    model_name: str | None
    """MODEL_NAME (default: the manifest entry's name, else the artifact's stem). The name
    clients put in /v2/models/{name} and /v1/models/{name}."""

    model_version: str | None
    """MODEL_VERSION (default: the manifest entry's version, else unversioned). Omitted from
    V2 responses when unset, as the Open Inference Protocol asks."""

    skops_trusted: tuple[str, ...]
    """SKOPS_TRUSTED (default empty). Extra type names a .skops file may contain beyond skops'
    own safe defaults; anything else makes the load refuse, naming the types."""

    max_body_bytes: int
    """MAX_BODY_BYTES (default 10 MiB). Larger request bodies get 413 before parsing."""

    retry_after_s: int
    """RETRY_AFTER_SECONDS (default 1). Sent with 503 while the model is not ready."""

    model_threads: int
    """MODEL_THREADS (default: the CPU share of this container, from cgroup cpu.max, at most
    the cores it may run on; the standalone server divides it among its workers). onnxruntime's
    intra-op threads: more threads than the pod's CPU limit only queue on the CFS quota."""

    model_repository: Path | None = None
    """MODEL_REPOSITORY (default unset: one model, MODEL_PATH). A directory whose manifest.json
    lists the models to serve (name, version, format, path, sha256: the shape `make models`
    writes), mounted from a volume: the server becomes the model pool, serving every listed
    model by name, loading each on its first request. Replaces MODEL_PATH and MODEL_ROOT (the
    repository is the root: no path may leave it)."""

    pool_memory_mb: float = 256.0
    """POOL_MEMORY_MB (default 256). The memory the pool may give loaded models (their estimated
    footprint, see `infer.pool.footprint_bytes`; the runtime libraries are not counted); the
    least recently used model is evicted to make room."""

    pool_load_wait_s: float = 10.0
    """POOL_LOAD_WAIT_SECONDS (default 10). How long a request waits for its model's load (its
    own or another request's) before a 503 with Retry-After: bounded, so that a slow load cannot
    hold every request thread."""

    pool_formats: tuple[str, ...] = ("onnx", "skops", "joblib", "mlflow")
    """POOL_FORMATS (default onnx,skops,joblib,mlflow). When the manifest lists a model in
    several formats (as `make models` does), the pool serves the first format here that it
    lists: ONNX first, the fast path without scikit-learn. Formats not named are not served."""

    repository_sha256: str | None = None
    """MODEL_REPOSITORY_SHA256 (default unset). The manifest's own sha256, pinned in the
    Service's environment where the volume cannot change it. Only then are pickle-based models
    (joblib, MLflow) served from the pool: their digests in a manifest that could be replaced
    along with them prove nothing (the same rule as MODEL_SHA256 for one model). ONNX and skops
    files are data, and load against the manifest's digests either way."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "InferSettings":
        env = os.environ if env is None else env
        path = env.get("MODEL_PATH", "").strip()
        repository = env.get("MODEL_REPOSITORY", "").strip()
        if repository and path:
            raise SettingsError("set MODEL_PATH (one model) or MODEL_REPOSITORY (the model pool), not both")
        if not path and not repository:
            raise SettingsError("MODEL_PATH is not set: name the model artifact to serve (or MODEL_REPOSITORY)")
        from .runtime import formats  # the runtime modules say which formats exist

        fmt = env.get("MODEL_FORMAT", "auto").strip().lower()
        known = ["auto", *formats()]
        if fmt not in known:
            raise SettingsError(f"MODEL_FORMAT must be one of {', '.join(known)}, not {fmt!r}")
        sha = env.get("MODEL_SHA256", "").strip().lower() or None
        if sha is not None and not _is_sha256(sha):
            raise SettingsError("MODEL_SHA256 must be 64 hex digits")
        pool_formats = tuple(f.strip().lower() for f in env.get("POOL_FORMATS", "").split(",") if f.strip())
        unknown = [f for f in pool_formats if f not in known[1:]]
        if unknown:
            raise SettingsError(f"POOL_FORMATS names unknown formats {', '.join(unknown)}: use {', '.join(known[1:])}")
        repository_sha = env.get("MODEL_REPOSITORY_SHA256", "").strip().lower() or None
        if repository_sha is not None and not _is_sha256(repository_sha):
            raise SettingsError("MODEL_REPOSITORY_SHA256 must be 64 hex digits")
        repository_path = Path(repository).resolve() if repository else None
        return cls(
            model_root=repository_path or Path(env.get("MODEL_ROOT", "models")).resolve(),
            model_path=path,
            model_format=fmt,
            model_sha256=sha,
            model_name=env.get("MODEL_NAME", "").strip() or None,
            model_version=env.get("MODEL_VERSION", "").strip() or None,
            skops_trusted=tuple(t.strip() for t in env.get("SKOPS_TRUSTED", "").split(",") if t.strip()),
            max_body_bytes=_positive(env, "MAX_BODY_BYTES", 10 * 1024 * 1024, int),
            retry_after_s=_positive(env, "RETRY_AFTER_SECONDS", 1, int),
            model_threads=_positive(env, "MODEL_THREADS", cpu_share(), int),
            model_repository=repository_path,
            pool_memory_mb=_positive(env, "POOL_MEMORY_MB", 256.0, float),
            pool_load_wait_s=_positive(env, "POOL_LOAD_WAIT_SECONDS", 10.0, float),
            pool_formats=pool_formats or cls.pool_formats,
            repository_sha256=repository_sha,
        )

    def for_entry(self, path: str, fmt: str, sha256: str | None, name: str, version: str | None) -> "InferSettings":
        """The settings that load one repository entry exactly as the one-model server loads
        its MODEL_PATH (same root rule, same gate): the pool is many of those."""
        from dataclasses import replace

        return replace(self, model_path=path, model_format=fmt, model_sha256=sha256, model_name=name,
                       model_version=version, model_repository=None)


def cpu_share(cgroup: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """Whole CPUs this container may use: its CFS quota (a pod's CPU limit) rounded up, and no
    more than the cores it is allowed to run on."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = cgroup.read_text().split()[:2]
        if quota != "max":
            return max(1, min(cores, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def _positive(env: Mapping[str, str], key: str, default: float, parse: type) -> Any:
    """A positive number (`parse`: int or float) from the environment, or `default` when unset."""
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        value = parse(raw)
    except ValueError:
        kind = "an integer" if parse is int else "a number"
        raise SettingsError(f"{key} must be {kind}, not {raw!r}") from None
    if not value > 0 or not math.isfinite(value):
        raise SettingsError(f"{key} must be positive, not {value}")
    return value


def _is_sha256(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)


