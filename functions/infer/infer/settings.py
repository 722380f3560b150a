"""Configuration of the inference server, read once from the environment at start."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from fncommon.env_settings import SettingsError, names, number, optional, sha256, text, whole


ROUTING = ("host", "host-only", "open")


@dataclass(frozen=True)
class InferSettings:
    model_root: Path
    """MODEL_ROOT (default models). The only directory models may be loaded from: a joblib or
    pickle file is code, so anything outside it is refused, symlinks included. A relative path
    is under this package's own directory (`infer/`, see `package_relative`), not the working
    directory, which differs per func builder."""

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

    pool_control_port: int = 8081
    """POOL_CONTROL_PORT (default 8081; 0: none). The port of the pool's control plane: the V2
    model repository API (index, load, unload) is served there and only there, never on the
    serving port that model hosts reach. In the cluster a plain Kubernetes Service selects the
    pool's pods on this port and a NetworkPolicy admits only the scale function
    (serving/pool/infer-pool.yaml): Knative routes one port per Service, so tenants cannot reach it."""

    pool_routing: str = "host"
    """POOL_ROUTING (default host). `host`: a request whose host (`Host`, `K-Original-Host` or
    `X-Forwarded-Host`) names a model of the repository is served by that model only; another
    model's name there (path, X-Model-Name, X-Forwarded-Host) is a 404 that lists nothing. A host
    that names no model (the pool's own cluster-local host, a pod IP) serves any model by name.
    `host-only`: such a host serves no model at all. `open`: any model through any host (the
    behaviour before the boundary; only for a pool whose tenants all trust each other)."""

    pool_memory_accounting: str = "measured"
    """POOL_MEMORY_ACCOUNTING (default measured). `measured`: a loaded model is charged what its
    load took (resident memory before and after, never less than the estimate); `estimate`:
    the estimate alone (file size x a per-format factor + overhead: deterministic, for tests and
    for comparing the two in `make bench-pool`)."""

    pool_load_deadline_s: float = 30.0
    """POOL_LOAD_DEADLINE_SECONDS (default 30). A load (read, verify, session, warm-up) that has
    not finished by then is given up: the model is refused for this load (a later request or a
    repository load retries) and its waiters get a 503; the thread left behind is not reused."""

    pool_poll_s: float = 5.0
    """POOL_REPOSITORY_POLL_SECONDS (default 5; 0: never). How often the pool re-reads the
    repository manifest: a changed manifest is verified, then new models serve, removed ones go
    and changed ones reload, without a restart (a manifest that does not verify keeps the last
    good one and says so in readiness)."""

    request_memory_mb: float = 192.0
    """REQUEST_MEMORY_MB (default 192). The memory requests may hold while decoded and
    predicted at once: each request reserves what reading its body costs before it is read,
    then, in one step, what decoding it and predicting one slice of it may cost, counted from
    its bytes (`infer.admission`); one that does not fit waits up to 1 s, then gets a 503 with
    Retry-After; one that could never fit gets a 413."""

    model_sha256_source: str = "MODEL_SHA256"
    """Where `model_sha256` came from, for a refusal's message (in the pool: its manifest)."""

    metric_models: int = 200
    """METRIC_MODELS (default 200). At most this many model names become values of the `model`
    label of the per-model metrics; requests for models beyond it count under `other`, so a
    10,000-model pool cannot grow Prometheus' series without bound."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "InferSettings":
        env = os.environ if env is None else env
        path = text(env, "MODEL_PATH", "")
        repository = text(env, "MODEL_REPOSITORY", "")
        if repository and path:
            raise SettingsError("set MODEL_PATH (one model) or MODEL_REPOSITORY (the model pool), not both")
        if not path and not repository:
            raise SettingsError("MODEL_PATH is not set: name the model artifact to serve (or MODEL_REPOSITORY)")
        from .runtime import formats  # the runtime modules say which formats exist

        fmt = text(env, "MODEL_FORMAT", "auto").lower()
        known = ["auto", *formats()]
        if fmt not in known:
            raise SettingsError(f"MODEL_FORMAT must be one of {', '.join(known)}, not {fmt!r}")
        sha = sha256(env, "MODEL_SHA256")
        pool_formats = tuple(f.lower() for f in names(env, "POOL_FORMATS", "", allow_empty=True))
        unknown = [f for f in pool_formats if f not in known[1:]]
        if unknown:
            raise SettingsError(f"POOL_FORMATS names unknown formats {', '.join(unknown)}: use {', '.join(known[1:])}")
        repository_sha = sha256(env, "MODEL_REPOSITORY_SHA256")
        accounting = text(env, "POOL_MEMORY_ACCOUNTING", "measured").lower()
        if accounting not in ("measured", "estimate"):
            raise SettingsError(f"POOL_MEMORY_ACCOUNTING must be measured or estimate, not {accounting!r}")
        routing = text(env, "POOL_ROUTING", "host").lower()
        if routing not in ROUTING:
            raise SettingsError(f"POOL_ROUTING must be one of {', '.join(ROUTING)}, not {routing!r}")
        repository_path = Path(repository).resolve() if repository else None
        return cls(
            model_root=repository_path or package_relative(text(env, "MODEL_ROOT", "models")).resolve(),
            model_path=path,
            model_format=fmt,
            model_sha256=sha,
            model_name=optional(env, "MODEL_NAME"),
            model_version=optional(env, "MODEL_VERSION"),
            skops_trusted=names(env, "SKOPS_TRUSTED", "", allow_empty=True),
            max_body_bytes=whole(env, "MAX_BODY_BYTES", 10 * 1024 * 1024, positive=True),
            retry_after_s=whole(env, "RETRY_AFTER_SECONDS", 1, positive=True),
            model_threads=whole(env, "MODEL_THREADS", cpu_share(), positive=True),
            model_repository=repository_path,
            pool_memory_mb=number(env, "POOL_MEMORY_MB", 256.0, positive=True),
            pool_load_wait_s=number(env, "POOL_LOAD_WAIT_SECONDS", 10.0, positive=True),
            pool_formats=pool_formats or cls.pool_formats,
            repository_sha256=repository_sha,
            pool_control_port=whole(env, "POOL_CONTROL_PORT", 8081, minimum=0),
            pool_routing=routing,
            pool_memory_accounting=accounting,
            pool_load_deadline_s=number(env, "POOL_LOAD_DEADLINE_SECONDS", 30.0, positive=True),
            pool_poll_s=number(env, "POOL_REPOSITORY_POLL_SECONDS", 5.0, minimum=0),
            request_memory_mb=number(env, "REQUEST_MEMORY_MB", 192.0, positive=True),
            metric_models=whole(env, "METRIC_MODELS", 200, positive=True),
        )

    def for_entry(self, path: str, fmt: str, sha256: str | None, name: str, version: str | None,
                  source: str = "the repository manifest") -> "InferSettings":
        """The settings that load one repository entry exactly as the one-model server loads
        its MODEL_PATH (same root rule, same gate): the pool is many of those."""
        from dataclasses import replace

        return replace(self, model_path=path, model_format=fmt, model_sha256=sha256, model_name=name,
                       model_version=version, model_repository=None,
                       model_sha256_source=source)


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


PACKAGE_DIR = Path(__file__).resolve().parent


def package_relative(path: str) -> Path:
    """An absolute path as given; a relative one under this package's directory. Why: the
    working directory differs per builder (func's pack builder runs the code from /workspace/fn,
    the host builder pip-installs the wheel under /func/.func/build/lib, `func run` runs from the
    source), but in each the models shipped inside the `infer` package sit beside this file (the
    wheel carries them: pyproject's hatch `artifacts`)."""
    candidate = Path(path)
    return candidate if candidate.is_absolute() else PACKAGE_DIR / candidate
