"""The published forecaster: loaded only from FORECASTER_ROOT, only if its sha256 matches.

A joblib file is code, so the manifest's digest is checked before unpickling, and the path it
names must stay inside the root (no `..`, no symlink out). The manifest is re-checked every tick
(one stat): when training publishes a new version, the next tick loads it, no restart. A new
version that fails its check is refused and the verified one keeps serving; the refusal is
reported in `problem` (and logged by the caller).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib

MANIFEST = "manifest.json"


class ModelUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class LoadedModel:
    estimator: Any
    version: str
    sha256: str
    quantile: float
    horizon: int


class ModelStore:
    def __init__(self, root: str):
        self.root = Path(root)
        self.model: LoadedModel | None = None
        self.problem: str | None = "not loaded yet"
        self._stamp: tuple[int, int, int] | None = None

    def refresh(self) -> LoadedModel | None:
        """Load the manifest's current artifact if the manifest changed since the last look."""
        manifest = self.root / MANIFEST
        try:
            stat = manifest.stat()
        except OSError as exc:
            self.problem = f"no forecaster manifest at {manifest}: {exc.strerror}"
            return self.model
        stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)  # os.replace gives a new inode
        if stamp == self._stamp:
            return self.model
        self._stamp = stamp
        try:
            self.model = self._load(json.loads(manifest.read_text())["current"])
            self.problem = None
        except (ModelUnavailable, OSError, ValueError, KeyError, TypeError) as exc:
            self.problem = f"forecaster refused: {exc}"
        return self.model

    def _load(self, entry: dict) -> LoadedModel:
        root = self.root.resolve()
        path = (root / entry["path"]).resolve()
        if root not in path.parents:
            raise ModelUnavailable(f"{entry['path']!r} is outside {root}")
        if entry.get("format", "joblib") != "joblib":
            raise ModelUnavailable(f"format {entry.get('format')!r} is not supported")
        expected = str(entry["sha256"]).lower()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != expected:
            raise ModelUnavailable(f"sha256 of {path.name} is {digest[:12]}..., manifest says {expected[:12]}...")
        estimator = joblib.load(path)
        for attribute in ("predict", "horizon", "quantile"):
            if not hasattr(estimator, attribute):
                raise ModelUnavailable(f"{path.name} is not a forecaster (no {attribute})")
        return LoadedModel(estimator, str(entry.get("version", digest[:12])), digest,
                           float(estimator.quantile), int(estimator.horizon))

