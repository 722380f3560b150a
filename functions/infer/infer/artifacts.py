"""Finding, verifying and loading model artifacts: joblib, skops and MLflow sklearn directories.

A joblib or pickle file runs code when loaded, so such a file is loaded only from inside the
configured model root and only when its sha256 equals the one configured (MODEL_SHA256) or the
one listed for it in a manifest.json beside it (or higher up, within the root). skops files hold
data, not code: they load when every type in them is trusted. Heavy imports (joblib, skops) are
made inside the loaders so that a server pays only for the format it serves.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ModelRefused
from .settings import InferSettings

MANIFEST = "manifest.json"
PICKLE_FORMATS = {"joblib", "pickle", "cloudpickle"}


@dataclass(frozen=True)
class LoadedArtifact:
    estimator: Any
    path: Path
    format: str
    sha256: str
    name: str
    version: str | None
    example: list | None = field(default=None)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_inside(root: Path, relative: str) -> Path:
    """The artifact's real path, refused when it (or a symlink on the way) leaves the root."""
    candidate = (root / relative).resolve()
    if candidate != root and root not in candidate.parents:
        raise ModelRefused(f"{relative!r} is outside the model root {str(root)!r}")
    if not candidate.exists():
        raise ModelRefused(f"{str(candidate)!r} does not exist")
    return candidate


def find_manifest_entry(root: Path, artifact: Path) -> dict | None:
    """The manifest entry for the artifact: the nearest manifest.json from its folder up to root."""
    folder = artifact if artifact.is_dir() else artifact.parent
    while True:
        manifest = folder / MANIFEST
        if manifest.is_file():
            try:
                entries = json.loads(manifest.read_text())["artifacts"]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ModelRefused(f"{str(manifest)!r} is not a valid manifest: {exc}") from None
            for entry in entries:
                if isinstance(entry, dict) and (folder / str(entry.get("path", ""))).resolve() == artifact:
                    return entry
        if folder == root or root not in folder.parents:
            return None
        folder = folder.parent


def detect_format(path: Path, configured: str) -> str:
    if configured != "auto":
        return configured
    if path.is_dir():
        if (path / "MLmodel").is_file():
            return "mlflow"
        raise ModelRefused(f"{str(path)!r} is a directory without an MLmodel file")
    if path.suffix == ".skops":
        return "skops"
    if path.suffix in {".joblib", ".pkl", ".pickle"}:
        return "joblib"
    raise ModelRefused(f"cannot tell the format of {path.name!r}: set MODEL_FORMAT")


def load_artifact(settings: InferSettings) -> LoadedArtifact:
    path = resolve_inside(settings.model_root, settings.model_path)
    fmt = detect_format(path, settings.model_format)
    entry = find_manifest_entry(settings.model_root, path) or {}
    expected = settings.model_sha256 or (str(entry["sha256"]).lower() if "sha256" in entry else None)

    if fmt == "mlflow":
        file, file_format = _mlflow_model_file(path, settings.model_root)
    else:
        file, file_format = path, fmt
    digest = sha256_of(file)
    if expected is not None and digest != expected:
        raise ModelRefused(f"sha256 of {file.name!r} is {digest}, expected {expected}")

    if file_format in PICKLE_FORMATS:
        if expected is None:
            raise ModelRefused(
                f"{file.name!r} is a pickle-based file (it runs code when loaded) and no sha256 "
                "is configured for it: set MODEL_SHA256 or list it in manifest.json"
            )
        estimator = _load_pickle(file, file_format)
    elif file_format == "skops":
        estimator = _load_skops(file, settings.skops_trusted)
    else:
        raise ModelRefused(f"unsupported model file format {file_format!r}")

    name = settings.model_name or entry.get("name") or (path.stem if path.is_file() else path.name)
    version = settings.model_version or (str(entry["version"]) if entry.get("version") else None)
    example = entry.get("example") if isinstance(entry.get("example"), list) else None
    return LoadedArtifact(estimator, path, fmt, digest, str(name), version, example)


def _load_pickle(file: Path, file_format: str) -> Any:
    try:
        if file_format == "joblib":
            import joblib

            return joblib.load(file)
        with file.open("rb") as f:
            return pickle.load(f)
    except Exception as exc:  # a corrupt or incompatible file: refuse, do not crash
        raise ModelRefused(f"cannot load {file.name!r}: {type(exc).__name__}: {exc}") from None


def _load_skops(file: Path, extra_trusted: tuple[str, ...]) -> Any:
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(file=file)
        refused = sorted(set(untrusted) - set(extra_trusted))
        if refused:
            raise ModelRefused(
                f"{file.name!r} contains types that are not trusted: {', '.join(refused)} "
                "(add them to SKOPS_TRUSTED only if you trust whoever made the file)"
            )
        return sio.load(file, trusted=list(untrusted))
    except ModelRefused:
        raise
    except Exception as exc:
        raise ModelRefused(f"cannot load {file.name!r}: {type(exc).__name__}: {exc}") from None


def _mlflow_model_file(directory: Path, root: Path) -> tuple[Path, str]:
    """The sklearn flavor's model file and its serialization format, read from MLmodel (YAML)
    without importing mlflow, so that models saved by `mlflow.sklearn.save_model` serve here."""
    import yaml

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
