"""The one interface every model runtime implements, and the registry that finds them.

A runtime module is a file `runtime_<name>.py` in this package with a `FORMATS` mapping
(format name -> `Format`), `model_file()` and `load()`; it is found by its file name, so adding
a runtime (a new file format, a new inference library) touches that one file. Runtime modules
import their libraries inside `load()`: a server pays only for the format it serves (the ONNX
path never imports scikit-learn or scipy).
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

OUTPUTS = ("predict", "predict_proba")


@dataclass(frozen=True)
class Format:
    suffixes: tuple[str, ...] = ()
    """File name endings that select this format when MODEL_FORMAT is auto."""
    directory_marker: str | None = None
    """A file whose presence in a directory selects this format (MLflow's MLmodel)."""


@dataclass(frozen=True)
class ModelInfo:
    """What protocols tell clients about a model, known without calling it."""

    n_features: int
    feature_names: list[str] | None
    classes: list | None
    outputs: tuple[str, ...]
    platform: str


class Runtime(Protocol):
    info: ModelInfo

    def predict(self, rows: np.ndarray, outputs: Sequence[str]) -> dict[str, np.ndarray]:
        """`rows` is a 2-D batch with the model's feature count, `outputs` a subset of
        `info.outputs`; bad data raises BadRequest, anything else is the server's fault."""
        ...


class RuntimeModule(Protocol):
    FORMATS: Mapping[str, Format]

    def model_file(self, path: Path, fmt: str, root: Path) -> tuple[Path, str, bool]:
        """The file to hash and load, its own format (an MLflow directory holds a pickle), and
        whether loading it runs code (then a sha256 is required)."""
        ...

    def warm(self) -> None:
        """Import the runtime's libraries ahead of any load (the pool does, before ready, for
        the formats it serves: model loads are then milliseconds)."""
        ...

    def load(self, data: bytes, file: Path, fmt: str, entry: Mapping[str, Any], settings: Any) -> Runtime:
        """`data`: the bytes of `file` that passed the sha256 gate (load these, never the file
        again); `file` and `fmt` as model_file returned them; `entry` the artifact's manifest
        entry (or empty). Refusals raise ModelRefused."""
        ...


@lru_cache(maxsize=1)
def modules() -> dict[str, ModuleType]:
    """format name -> the runtime module serving it."""
    package = __name__.rsplit(".", 1)[0]
    found: dict[str, ModuleType] = {}
    for info in pkgutil.iter_modules(importlib.import_module(package).__path__):
        if info.name.startswith("runtime_"):
            module = importlib.import_module(f"{package}.{info.name}")
            for fmt in module.FORMATS:
                found[fmt] = module
    return found


def formats() -> dict[str, Format]:
    return {fmt: module.FORMATS[fmt] for fmt, module in modules().items()}
