"""A served model's lifecycle (load, warm up, ready, predict), independent of any protocol and
of the runtime behind it, and the registry that finds served models by name.

Protocols decode their requests into a 2-D array (plus optional column names) and go through
`DataPlane.predict`; the checks every runtime needs (feature count, known outputs, columns by
name) live here once.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from fncommon import json_log

from .artifacts import LoadedArtifact, load_artifact
from .errors import BadRequest, ModelNotFound, ModelNotReady, ModelRefused, NotFound
from .metrics import LOAD_SECONDS, model_label
from .registry import Registry
from .runtime import ModelInfo, Runtime
from .settings import InferSettings

log = logging.getLogger("infer.model")


@dataclass(frozen=True)
class Prediction:
    name: str
    values: np.ndarray


class ServedModel:
    def __init__(self, settings: InferSettings, entry: dict | None = None, reason: str = "model is loading"):
        self.settings = settings
        self.entry = entry
        self.name = settings.model_name or _default_name(settings.model_path)
        self.version = settings.model_version
        self.artifact: LoadedArtifact | None = None
        self.load_seconds: float | None = None
        self.reason = reason
        self._ready = threading.Event()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    # -- lifecycle -------------------------------------------------------------------------
    def load(self, log_loaded: bool = True) -> bool:
        """Load and warm up once; on refusal stay not ready and keep the reason for clients.
        `log_loaded=False`: the caller logs the load as its own event (the pool, with more)."""
        started = time.perf_counter()
        try:
            artifact = load_artifact(self.settings, self.entry)
            self.artifact = artifact
            self.name, self.version = artifact.name, artifact.version
            self._warm_up()
        except ModelRefused as exc:
            self.artifact = None
            self.reason = f"model refused: {exc}"
            json_log.event(log, "model refused", logging.ERROR, model=self.name, reason=str(exc))
            return False
        except Exception as exc:  # warm-up failed: the model cannot serve
            self.artifact = None
            self.reason = f"model failed its warm-up prediction: {type(exc).__name__}: {exc}"
            json_log.event(log, "model warm-up failed", logging.ERROR, model=self.name, traceback=traceback.format_exc())
            return False
        self.load_seconds = time.perf_counter() - started
        LOAD_SECONDS.labels(model_label(self.name)).set(self.load_seconds)  # bounded labels in a pool
        self.reason = "ready"
        self._ready.set()
        if log_loaded:
            json_log.event(
                log, "model loaded", model=self.name, version=self.version, format=artifact.format,
                path=str(artifact.path), sha256=artifact.sha256, load_seconds=round(self.load_seconds, 4),
            )
        return True

    def _warm_up(self) -> None:
        """One real prediction before ready, so the first client does not pay for lazy setup."""
        example = self.artifact.example if self.artifact else None
        rows = np.asarray(example, dtype=np.float64) if example else np.zeros((1, self.info.n_features))
        self.runtime.predict(rows, self.info.outputs)

    # -- what the runtime says about the model ---------------------------------------------
    @property
    def runtime(self) -> Runtime:
        assert self.artifact is not None
        return self.artifact.runtime

    @property
    def info(self) -> ModelInfo:
        return self.runtime.info

    @property
    def outputs(self) -> tuple[str, ...]:
        return self.info.outputs

    def require_ready(self) -> None:
        if not self.ready:
            raise ModelNotReady(self.reason, self.settings.retry_after_s)

    # -- predict ---------------------------------------------------------------------------
    def arrange_columns(self, columns: Sequence[str]) -> list[int] | None:
        """Positions that put named columns in the order the model was fitted on, or None when
        they already are in that order (or the model has no names and the count is right)."""
        names = self.info.feature_names
        columns = [str(c) for c in columns]
        if names is None:
            if len(columns) != self.info.n_features:
                raise BadRequest(f"model expects {self.info.n_features} features, got {len(columns)} columns")
            return None
        missing = [n for n in names if n not in columns]
        if missing:
            raise BadRequest(f"missing feature columns: {', '.join(missing)}")
        extra = [c for c in columns if c not in names]
        if extra:
            raise BadRequest(f"unknown feature columns: {', '.join(extra)}")
        if len(set(columns)) != len(columns):
            raise BadRequest("feature columns are repeated")
        order = [columns.index(n) for n in names]
        return None if order == list(range(len(order))) else order

    def predict(self, rows: np.ndarray, outputs: Sequence[str] = ("predict",)) -> list[Prediction]:
        self.require_ready()
        if rows.ndim != 2:
            raise BadRequest(f"input must be a 2-D batch of rows, got {rows.ndim} dimension(s)")
        if rows.shape[0] == 0:
            raise BadRequest("input has no rows")
        if rows.shape[1] != self.info.n_features:
            raise BadRequest(f"model expects {self.info.n_features} features per row, got {rows.shape[1]}")
        for name in outputs:
            if name not in self.outputs:
                raise BadRequest(f"unknown output {name!r}: this model has {', '.join(self.outputs)}")
        values = self.runtime.predict(rows, outputs)
        return [Prediction(name, values[name]) for name in outputs]


def _no_repository() -> NotFound:
    return NotFound("the model repository extension is served by the model pool (MODEL_REPOSITORY)")


class ModelRegistry(Registry):
    """The `Registry` of a one-model server (MODEL_PATH): the one model serves every request,
    whatever host it came on; `infer.pool.ModelPool` is the other implementation."""

    extensions: tuple[str, ...] = ()
    loads_on_demand = False

    def __init__(self, models: Sequence[ServedModel]):
        self._models = list(models)

    def __iter__(self) -> Iterator[ServedModel]:
        return iter(self._models)

    def peek(self, name: str, version: str | None = None) -> ServedModel:
        return self.get(name, version)

    def route_name(self, request: Any) -> str | None:
        """The model a request names outside its path: none here, one model serves them all."""
        return None

    def boundary(self, headers: Any) -> str | None:
        """One model serves every host (its Service is its boundary)."""
        return None

    def may_block(self, name: str | None) -> bool:
        return False

    def choose(self, request: Any) -> ServedModel:
        (model,) = self._models  # MLflow's protocol names no model: this server serves one
        return model

    # The model repository extension is the pool's: here its paths stay the 404s they were.
    def index(self, ready_only: bool = False) -> list[dict]:
        raise _no_repository()

    def load(self, name: str) -> ServedModel:
        raise _no_repository()

    def unload(self, name: str) -> bool:
        raise _no_repository()

    @property
    def names(self) -> list[str]:
        return [m.name for m in self._models]

    def get(self, name: str, version: str | None = None) -> ServedModel:
        for model in self._models:
            if model.name == name:
                if version is not None and version != model.version:
                    have = f"version {model.version!r}" if model.version else "no versions"
                    raise ModelNotFound(f"model {name!r} has no version {version!r} (it has {have})")
                return model
        served = ", ".join(repr(n) for n in self.names)
        raise ModelNotFound(f"model {name!r} is not served here; this server serves {served}")

    def label(self, name: str | None) -> str:
        """The metrics label for a request's model: its own name when served, else the first
        model's (so that a stray name cannot grow the label set)."""
        names = self.names
        return name if name in names else names[0]

    def require_ready(self) -> None:
        for model in self._models:
            model.require_ready()


def _default_name(model_path: str) -> str:
    stem = model_path.rstrip("/").rsplit("/", 1)[-1]
    return stem.rsplit(".", 1)[0] if "." in stem else stem
