"""The published forecaster: loaded only from FORECASTER_ROOT, only if its sha256 matches.

A joblib file is code, so the digest is checked before unpickling, on the very bytes that are
then unpickled (read once: nothing can swap the file between the check and the load), and the
path the manifest names must stay inside the root (no `..`, no symlink out). A manifest beside the
artifact can be replaced together with it, so the digest can also be pinned where the artifact
cannot change it (FORECASTER_SHA256 in the function's environment): then only that artifact loads. The manifest is re-checked every tick
(one stat): when training publishes a new version, the next tick loads it, no restart. A new
version that fails its check is refused and the verified one keeps serving; the refusal is
reported in `problem` (and logged by the caller). So is a forecaster fitted on other features
than this release's features.py builds.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib

from fncommon.verified_file import inside, read_verified

from . import features

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
    def __init__(self, root: str, pinned_sha256: str | None = None):
        self.root = Path(root)
        self.pinned = pinned_sha256
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
        except (ModelUnavailable, OSError, ValueError, KeyError, TypeError) as exc:  # verified_file.Refused is a ValueError
            self.problem = f"forecaster refused: {exc}"
        return self.model

    def _load(self, entry: dict) -> LoadedModel:
        path = inside(self.root, str(entry["path"]), "FORECASTER_ROOT")
        if entry.get("format", "joblib") != "joblib":
            raise ModelUnavailable(f"format {entry.get('format')!r} is not supported")
        expected = str(entry["sha256"]).lower()
        if self.pinned is not None and expected != self.pinned:
            raise ModelUnavailable(f"manifest names sha256 {expected[:12]}..., FORECASTER_SHA256 pins {self.pinned[:12]}...")
        data, digest = read_verified(path, expected)
        estimator = joblib.load(io.BytesIO(data))
        for attribute in ("predict", "horizon", "quantile"):
            if not hasattr(estimator, attribute):
                raise ModelUnavailable(f"{path.name} is not a forecaster (no {attribute})")
        # A model fitted on other features (an older release) would fail on every row, or worse
        # read one column as another: refused until a forecaster of these features is published.
        if list(getattr(estimator, "feature_names_", [])) != list(features.FEATURE_NAMES):
            raise ModelUnavailable(f"{path.name} was fitted on other features than this function builds; "
                                   "publish it again (make models)")
        return LoadedModel(estimator, str(entry.get("version", digest[:12])), digest,
                           float(estimator.quantile), int(estimator.horizon))

