"""Finding and verifying model artifacts, then handing them to the runtime of their format.

A file that runs code when loaded (joblib, pickle, an MLflow model.pkl) is loaded only from
inside the configured model root and only when its sha256 equals MODEL_SHA256, pinned in the
Service's environment where the artifact cannot change it: a manifest.json beside the file could
be replaced together with it, so for these formats its digest is not enough. Data-only formats
(ONNX, skops) need no sha256, but one that is configured or listed in the manifest is checked all
the same. The file is read once: the bytes hashed are the bytes loaded (nothing can swap the
file between the check and the load).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fncommon.verified_file import Refused, inside, read_verified

from .errors import ModelRefused
from .runtime import Runtime, formats, modules

if TYPE_CHECKING:
    from .settings import InferSettings

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class LoadedArtifact:
    runtime: Runtime
    path: Path
    format: str
    sha256: str
    name: str
    version: str | None
    example: list | None = field(default=None)

    @property
    def estimator(self) -> Any:
        """The scikit-learn object itself, for runtimes that have one (ONNX has a session)."""
        return getattr(self.runtime, "estimator", None)


def resolve_inside(root: Path, relative: str) -> Path:
    """The artifact's real path, refused when it (or a symlink on the way) leaves the root."""
    try:
        return inside(root, relative)
    except Refused as exc:
        raise ModelRefused(str(exc)) from None


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
    known = formats()
    if path.is_dir():
        for name, fmt in known.items():
            if fmt.directory_marker and (path / fmt.directory_marker).is_file():
                return name
        raise ModelRefused(f"{str(path)!r} is a directory without an MLmodel file")
    for name, fmt in known.items():
        if path.suffix in fmt.suffixes:
            return name
    raise ModelRefused(f"cannot tell the format of {path.name!r}: set MODEL_FORMAT")


def load_artifact(settings: InferSettings, entry: dict | None = None) -> LoadedArtifact:
    """`entry`: the artifact's manifest entry when the caller already read it (the pool, from
    its verified repository manifest); else the nearest manifest.json is searched."""
    path = resolve_inside(settings.model_root, settings.model_path)
    fmt = detect_format(path, settings.model_format)
    if entry is None:
        entry = find_manifest_entry(settings.model_root, path) or {}
    listed = str(entry["sha256"]).lower() if "sha256" in entry else None

    module = modules()[fmt]
    file, file_format, runs_code = module.model_file(path, fmt, settings.model_root)
    if runs_code and settings.model_sha256 is None:
        raise ModelRefused(
            f"{file.name!r} is a pickle-based file (it runs code when loaded) and no sha256 "
            "is pinned for it: set MODEL_SHA256 (a manifest beside the file could be replaced with it)"
        )
    expected = settings.model_sha256 or listed
    try:
        data, digest = read_verified(file, expected,
                                     settings.model_sha256_source if settings.model_sha256 else "its manifest entry")
    except Refused as exc:
        raise ModelRefused(str(exc)) from None
    runtime = module.load(data, file, file_format, entry, settings)

    name = settings.model_name or entry.get("name") or (path.stem if path.is_file() else path.name)
    version = settings.model_version or (str(entry["version"]) if entry.get("version") else None)
    example = entry.get("example") if isinstance(entry.get("example"), list) else None
    return LoadedArtifact(runtime, path, fmt, digest, str(name), version, example)
