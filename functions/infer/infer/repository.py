"""The model repository the pool serves: one directory (a mounted volume) whose manifest.json
lists each model artifact (name, version, format, path, sha256), the shape `make models` and
`training.publish_model` write, so that `models/` is a repository as it is.

Verified once at start, before the pool reports ready: the manifest parses, every listed path
stays inside the directory (symlinks included) and exists, every entry records a sha256 (the
load checks the bytes against it), and when MODEL_REPOSITORY_SHA256 is pinned the manifest's
own digest equals it. Nothing is loaded or hashed here: a model's bytes are read and checked
when it is loaded, the same gate as the one-model server (`artifacts.load_artifact`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from .artifacts import MANIFEST, detect_format, resolve_inside
from .errors import ModelRefused
from .runtime import modules


class RepositoryRefused(ModelRefused):
    """The manifest cannot be served; the pool stays up, not ready, and says why."""


@dataclass(frozen=True)
class RepositoryEntry:
    name: str
    version: str | None
    format: str
    path: str
    """As listed: relative to the repository directory."""
    file: Path
    """The file whose bytes are hashed and loaded (an MLflow directory's model file)."""
    size_bytes: int
    sha256: str
    runs_code: bool | None
    """Pickle-based (joblib, MLflow): loading it runs code. None until settled (`_settle`)."""
    entry: Mapping[str, Any] = field(repr=False, compare=False)
    """The manifest entry as written (the ONNX `server` block, the warm-up `example`)."""
    refused: str | None = None
    """Why the pool will not load this entry, known from the manifest alone."""
    root: Path | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class Repository:
    root: Path
    manifest_sha256: str
    pinned: bool
    models: dict[tuple[str, str | None], RepositoryEntry]
    """(name, version) -> the one entry served for it (the preferred format)."""

    by_name: dict[str, list[str | None]] = field(init=False, repr=False, compare=False)
    """name -> its versions, oldest first (looked up per request: not a scan of every model)."""

    def __post_init__(self) -> None:
        by_name: dict[str, list[str | None]] = {}
        for name, version in self.models:
            by_name.setdefault(name, []).append(version)
        object.__setattr__(self, "by_name", {n: sorted(v, key=_version_order) for n, v in sorted(by_name.items())})

    @property
    def names(self) -> list[str]:
        return list(self.by_name)

    def versions(self, name: str) -> list[str | None]:
        """Oldest first; the last is what an unversioned request gets (Triton's `latest`)."""
        return self.by_name.get(name, [])


def read_repository(root: Path, formats: tuple[str, ...], pinned_sha256: str | None) -> Repository:
    manifest = root / MANIFEST
    try:
        raw = manifest.read_bytes()
    except OSError as exc:
        raise RepositoryRefused(f"cannot read the repository manifest {str(manifest)!r}: {exc.strerror or exc}") from None
    digest = hashlib.sha256(raw).hexdigest()
    if pinned_sha256 is not None and digest != pinned_sha256:
        raise RepositoryRefused(f"sha256 of {str(manifest)!r} is {digest}, MODEL_REPOSITORY_SHA256 pins {pinned_sha256}")
    try:
        doc = json.loads(raw)
        artifacts = doc["artifacts"]
        if not isinstance(artifacts, list):
            raise TypeError("artifacts is not a list")
    except (ValueError, KeyError, TypeError) as exc:
        raise RepositoryRefused(f"{str(manifest)!r} is not a valid manifest (an object with an artifacts list): {exc}") from None
    problems: list[str] = []
    candidates: dict[tuple[str, str | None], dict[str, RepositoryEntry]] = {}
    for i, item in enumerate(artifacts):
        try:
            entry = _entry(root, item)
        except ModelRefused as exc:
            problems.append(f"artifacts[{i}]: {exc}")
            continue
        listed = candidates.setdefault((entry.name, entry.version), {})
        if entry.format in listed:
            problems.append(f"artifacts[{i}]: {entry.name!r} version {entry.version!r} is listed twice as {entry.format}")
        listed[entry.format] = entry
    if problems:
        raise RepositoryRefused(f"{str(manifest)!r} does not verify: " + "; ".join(problems))
    models = {}
    for key, by_format in candidates.items():
        try:
            chosen = choose_format(by_format, formats, pinned_sha256 is not None)
        except ModelRefused as exc:
            problems.append(str(exc))
            continue
        if chosen is not None:
            models[key] = chosen
    if problems:
        raise RepositoryRefused(f"{str(manifest)!r} does not verify: " + "; ".join(problems))
    if not models:
        raise RepositoryRefused(f"{str(manifest)!r} lists no model in a served format ({', '.join(formats)})")
    return Repository(root, digest, pinned_sha256 is not None, models)


def choose_format(by_format: Mapping[str, RepositoryEntry], formats: tuple[str, ...], pinned: bool) -> RepositoryEntry | None:
    """The first format in the preference order that can be loaded; when none can (pickles
    without a pinned manifest), the first listed one, which then says why it is refused."""
    listed = []
    for fmt in formats:
        if fmt in by_format:
            entry = _settle(by_format[fmt], pinned)
            if entry.refused is None:
                return entry
            listed.append(entry)
    return listed[0] if listed else None


def _entry(root: Path, item: Any) -> RepositoryEntry:
    if not isinstance(item, dict):
        raise ModelRefused("is not an object")
    name, path, sha = item.get("name"), item.get("path"), item.get("sha256")
    if not isinstance(name, str) or not name or "/" in name or name != name.strip():
        raise ModelRefused(f"name {name!r} is not a model name (a non-empty string without '/')")
    if not isinstance(path, str) or not path:
        raise ModelRefused(f"{name!r} has no path")
    if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha.lower()):
        raise ModelRefused(f"{name!r} ({path}) records no sha256 (64 hex digits)")
    version = str(item["version"]) if item.get("version") not in (None, "") else None
    resolved = resolve_inside(root, path)
    fmt = detect_format(resolved, str(item.get("format") or "auto"))
    if fmt not in modules():
        raise ModelRefused(f"{name!r} ({path}) has unknown format {fmt!r}")
    return RepositoryEntry(name, version, fmt, path, resolved, 0, sha.lower(), None, item, root=root)


def _settle(entry: RepositoryEntry, pinned: bool) -> RepositoryEntry:
    """The file its format loads (an MLflow directory's model file: its MLmodel is read only
    for an entry that may be served), its size, and whether the pool may load it."""
    if entry.runs_code is not None:
        return entry
    file, _, runs_code = modules()[entry.format].model_file(entry.file, entry.format, entry.root)
    refused = None
    if runs_code and not pinned:
        refused = (f"{file.name!r} is pickle-based (it runs code when loaded): the pool loads it only when the "
                   "manifest's own sha256 is pinned in MODEL_REPOSITORY_SHA256")
    try:
        size = file.stat().st_size
    except OSError as exc:
        raise RepositoryRefused(f"{entry.name!r}: cannot read {str(file)!r}: {exc.strerror or exc}") from None
    return replace(entry, file=file, size_bytes=size, runs_code=runs_code, refused=refused)


def _version_order(version: str | None) -> tuple:
    if version is None:
        return (0, 0, "")
    return (1, int(version), "") if version.isdigit() else (2, 0, version)
