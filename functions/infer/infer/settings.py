"""Configuration of the inference server, read once from the environment at start."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping


class SettingsError(ValueError):
    """A configuration value that cannot be used; the server refuses to start serving."""


@dataclass(frozen=True)
class InferSettings:
    model_root: Path
    """MODEL_ROOT (default ./models). The only directory models may be loaded from: a joblib or
    pickle file is code, so anything outside it is refused, symlinks included."""

    model_path: str
    """MODEL_PATH (required). The artifact, relative to MODEL_ROOT (or absolute inside it): an
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

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "InferSettings":
        env = os.environ if env is None else env
        path = env.get("MODEL_PATH", "").strip()
        if not path:
            raise SettingsError("MODEL_PATH is not set: name the model artifact to serve")
        from .runtime import formats  # the runtime modules say which formats exist

        fmt = env.get("MODEL_FORMAT", "auto").strip().lower()
        known = ["auto", *formats()]
        if fmt not in known:
            raise SettingsError(f"MODEL_FORMAT must be one of {', '.join(known)}, not {fmt!r}")
        sha = env.get("MODEL_SHA256", "").strip().lower() or None
        if sha is not None and (len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha)):
            raise SettingsError("MODEL_SHA256 must be 64 hex digits")
        return cls(
            model_root=Path(env.get("MODEL_ROOT", "models")).resolve(),
            model_path=path,
            model_format=fmt,
            model_sha256=sha,
            model_name=env.get("MODEL_NAME", "").strip() or None,
            model_version=env.get("MODEL_VERSION", "").strip() or None,
            skops_trusted=tuple(t.strip() for t in env.get("SKOPS_TRUSTED", "").split(",") if t.strip()),
            max_body_bytes=_positive_int(env, "MAX_BODY_BYTES", 10 * 1024 * 1024),
            retry_after_s=_positive_int(env, "RETRY_AFTER_SECONDS", 1),
            model_threads=_positive_int(env, "MODEL_THREADS", cpu_share()),
        )


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


def _positive_int(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{key} must be an integer, not {raw!r}") from None
    if value <= 0:
        raise SettingsError(f"{key} must be positive, not {value}")
    return value
