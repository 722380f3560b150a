"""scikit-learn estimators from joblib/pickle, skops and MLflow sklearn directories.

A joblib or pickle file runs code when loaded: the artifact gate (artifacts.py) loads it only
with a matching sha256. skops files hold data, not code: they load when every type in them is
trusted. Everything the server says about the model comes from the estimator itself.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import BadRequest, ModelRefused
from .runtime import OUTPUTS, Format, ModelInfo

FORMATS = {
    "joblib": Format(suffixes=(".joblib", ".pkl", ".pickle")),
    "skops": Format(suffixes=(".skops",)),
    "mlflow": Format(directory_marker="MLmodel"),
}
PICKLE_FORMATS = {"joblib", "pickle", "cloudpickle"}

# sklearn warns on every call when a model fitted on a DataFrame gets an array; the server
# reorders columns by name itself, so the warning says nothing here and costs time per request.
warnings.filterwarnings("ignore", message="X does not have valid feature names")


class SklearnRuntime:
    def __init__(self, estimator: Any):
        self.estimator = estimator
        if not callable(getattr(estimator, "predict", None)):
            raise ModelRefused(f"{type(estimator).__name__} has no predict method")
        n = getattr(estimator, "n_features_in_", None)
        if n is None:
            raise ModelRefused(f"{type(estimator).__name__} is not fitted (no n_features_in_)")
        names = getattr(estimator, "feature_names_in_", None)
        classes = getattr(estimator, "classes_", None)
        # Pipelines expose predict_proba only when their last step has it (available_if).
        has_proba = hasattr(estimator, "predict_proba")
        self.info = ModelInfo(
            n_features=int(n),
            feature_names=[str(c) for c in names] if names is not None else None,
            classes=classes.tolist() if classes is not None else None,
            outputs=OUTPUTS if has_proba else OUTPUTS[:1],
            platform="sklearn",
        )

    def predict(self, rows: np.ndarray, outputs: Sequence[str]) -> dict[str, np.ndarray]:
        results = {}
        for name in outputs:
            try:
                values = getattr(self.estimator, name)(rows)
            except ValueError as exc:  # sklearn's input validation: the client's data
                raise BadRequest(f"model rejected the input: {exc}") from None
            results[name] = np.asarray(values)
        return results


def warm() -> None:
    """Import scikit-learn now (~1 s with scipy), so that a model load later does not."""
    import joblib  # noqa: F401
    import sklearn.base  # noqa: F401


def model_file(path: Path, fmt: str, root: Path) -> tuple[Path, str, bool]:
    if fmt == "mlflow":
        file, file_format = _mlflow_model_file(path, root)
    else:
        file, file_format = path, fmt
    return file, file_format, file_format in PICKLE_FORMATS


def load(data: bytes, file: Path, fmt: str, entry: Mapping[str, Any], settings: Any) -> SklearnRuntime:
    if fmt in PICKLE_FORMATS:
        estimator = _load_pickle(data, file, fmt)
    elif fmt == "skops":
        estimator = _load_skops(data, file, settings.skops_trusted)
    else:
        raise ModelRefused(f"unsupported model file format {fmt!r}")
    return SklearnRuntime(estimator)


def _load_pickle(data: bytes, file: Path, file_format: str) -> Any:
    try:
        if file_format == "joblib":
            import io

            import joblib

            return joblib.load(io.BytesIO(data))
        return pickle.loads(data)
    except Exception as exc:  # a corrupt or incompatible file: refuse, do not crash
        raise ModelRefused(f"cannot load {file.name!r}: {type(exc).__name__}: {exc}") from None


def _load_skops(data: bytes, file: Path, extra_trusted: tuple[str, ...]) -> Any:
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(data=data)
        refused = sorted(set(untrusted) - set(extra_trusted))
        if refused:
            raise ModelRefused(
                f"{file.name!r} contains types that are not trusted: {', '.join(refused)} "
                "(add them to SKOPS_TRUSTED only if you trust whoever made the file)"
            )
        return sio.loads(data, trusted=list(untrusted))
    except ModelRefused:
        raise
    except Exception as exc:
        raise ModelRefused(f"cannot load {file.name!r}: {type(exc).__name__}: {exc}") from None


def _mlflow_model_file(directory: Path, root: Path) -> tuple[Path, str]:
    """The sklearn flavor's model file and its serialization format, read from MLmodel (YAML)
    without importing mlflow, so that models saved by `mlflow.sklearn.save_model` serve here."""
    import yaml

    from .artifacts import resolve_inside

    try:
        mlmodel = yaml.safe_load((directory / "MLmodel").read_text())
        flavor = mlmodel["flavors"]["sklearn"]
        relative = str(flavor["pickled_model"])
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise ModelRefused(f"{str(directory)!r} has no usable sklearn flavor in MLmodel: {exc}") from None
    serialization = str(flavor.get("serialization_format", "cloudpickle"))
    if serialization not in PICKLE_FORMATS | {"skops"}:
        raise ModelRefused(f"MLmodel serialization_format {serialization!r} is not supported")
    file = resolve_inside(root, str((directory / relative).relative_to(root)))
    if serialization == "cloudpickle":
        serialization = "pickle"  # sklearn estimators pickled by cloudpickle load with pickle
    return file, serialization
