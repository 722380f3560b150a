"""The served model's lifecycle (load, warm up, ready, predict), independent of any protocol.

Protocols decode their requests into a 2-D array (plus optional column names), call
`ServedModel.predict`, and encode what it returns; everything the estimator can tell about
itself (feature count and names, classes, which outputs it has) comes from the estimator.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .artifacts import LoadedArtifact, load_artifact
from .errors import BadRequest, ModelNotReady, ModelRefused
from .metrics import LOAD_SECONDS
from .settings import InferSettings

log = logging.getLogger("infer.model")

OUTPUTS = ("predict", "predict_proba")

# sklearn warns on every call when a model fitted on a DataFrame gets an array; the server
# reorders columns by name itself, so the warning says nothing here and costs time per request.
warnings.filterwarnings("ignore", message="X does not have valid feature names")


@dataclass(frozen=True)
class Prediction:
    name: str
    values: np.ndarray


class ServedModel:
    def __init__(self, settings: InferSettings):
        self.settings = settings
        self.name = settings.model_name or _default_name(settings.model_path)
        self.version = settings.model_version
        self.artifact: LoadedArtifact | None = None
        self.load_seconds: float | None = None
        self.reason = "model is loading"
        self._ready = threading.Event()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    # -- lifecycle -------------------------------------------------------------------------
    def load(self) -> bool:
        """Load and warm up once; on refusal stay not ready and keep the reason for clients."""
        started = time.perf_counter()
        try:
            artifact = load_artifact(self.settings)
            self.artifact = artifact
            self.name, self.version = artifact.name, artifact.version
            self._check_estimator()
            self._warm_up()
        except ModelRefused as exc:
            self.artifact = None
            self.reason = f"model refused: {exc}"
            log.error("model refused", extra={"model": self.name, "reason": str(exc)})
            return False
        except Exception as exc:  # warm-up failed: the model cannot serve
            self.artifact = None
            self.reason = f"model failed its warm-up prediction: {type(exc).__name__}: {exc}"
            log.exception("model warm-up failed", extra={"model": self.name})
            return False
        self.load_seconds = time.perf_counter() - started
        LOAD_SECONDS.labels(self.name).set(self.load_seconds)
        self.reason = "ready"
        self._ready.set()
        log.info(
            "model loaded",
            extra={
                "model": self.name,
                "version": self.version,
                "format": artifact.format,
                "path": str(artifact.path),
                "sha256": artifact.sha256,
                "load_seconds": round(self.load_seconds, 4),
            },
        )
        return True

    def _check_estimator(self) -> None:
        est = self.estimator_unchecked
        if not callable(getattr(est, "predict", None)):
            raise ModelRefused(f"{type(est).__name__} has no predict method")
        if self.n_features is None:
            raise ModelRefused(f"{type(est).__name__} is not fitted (no n_features_in_)")

    def _warm_up(self) -> None:
        """One real prediction before ready, so the first client does not pay for lazy setup."""
        example = self.artifact.example if self.artifact else None
        rows = np.asarray(example) if example else np.zeros((1, self.n_features))
        self.estimator_unchecked.predict(rows)
        if self.has_proba:
            self.estimator_unchecked.predict_proba(rows)

    # -- what the estimator says about itself ----------------------------------------------
    @property
    def estimator_unchecked(self) -> Any:
        assert self.artifact is not None
        return self.artifact.estimator

    @property
    def n_features(self) -> int | None:
        n = getattr(self.estimator_unchecked, "n_features_in_", None)
        return int(n) if n is not None else None

    @property
    def feature_names(self) -> list[str] | None:
        names = getattr(self.estimator_unchecked, "feature_names_in_", None)
        return [str(n) for n in names] if names is not None else None

    @property
    def classes(self) -> list | None:
        classes = getattr(self.estimator_unchecked, "classes_", None)
        return classes.tolist() if classes is not None else None

    @property
    def has_proba(self) -> bool:
        # Pipelines expose predict_proba only when their last step has it (available_if).
        return hasattr(self.estimator_unchecked, "predict_proba")

    @property
    def outputs(self) -> tuple[str, ...]:
        return OUTPUTS if self.has_proba else OUTPUTS[:1]

    def require_ready(self) -> None:
        if not self.ready:
            raise ModelNotReady(self.reason, self.settings.retry_after_s)

    # -- predict ---------------------------------------------------------------------------
    def arrange_columns(self, columns: Sequence[str]) -> list[int] | None:
        """Positions that put named columns in the order the model was fitted on, or None when
        they already are in that order (or the model has no names and the count is right)."""
        names = self.feature_names
        columns = [str(c) for c in columns]
        if names is None:
            if len(columns) != self.n_features:
                raise BadRequest(f"model expects {self.n_features} features, got {len(columns)} columns")
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
        if rows.shape[1] != self.n_features:
            raise BadRequest(f"model expects {self.n_features} features per row, got {rows.shape[1]}")
        for name in outputs:
            if name not in self.outputs:
                raise BadRequest(f"unknown output {name!r}: this model has {', '.join(self.outputs)}")
        est = self.estimator_unchecked
        results = []
        for name in outputs:
            try:
                values = getattr(est, name)(rows)
            except ValueError as exc:  # sklearn's input validation: the client's data
                raise BadRequest(f"model rejected the input: {exc}") from None
            results.append(Prediction(name, np.asarray(values)))
        return results


def _default_name(model_path: str) -> str:
    stem = model_path.rstrip("/").rsplit("/", 1)[-1]
    return stem.rsplit(".", 1)[0] if "." in stem else stem
