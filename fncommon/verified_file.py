"""The one gate every artifact passes before it is loaded (a served model, a pool's repository
entry, the published forecaster): the path must stay inside its configured root (no `..`, no
symlink out) and exist, and the bytes are read once and hashed, so the bytes checked against the
expected sha256 are the very bytes then loaded (nothing can swap the file between the check and
the load). A joblib or pickle file is code: this check is what stands between a writable volume
and code execution.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


class Refused(ValueError):
    """The artifact must not be loaded; the message says why (callers re-raise it as their own
    error type, with its status)."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def inside(root: Path, relative: str, what: str = "the model root") -> Path:
    """The real path of `relative` under `root`, refused when it (or a symlink on the way)
    leaves the root, or does not exist."""
    root = root.resolve()
    candidate = (root / relative).resolve()
    if candidate != root and root not in candidate.parents:
        raise Refused(f"{relative!r} is outside {what} {str(root)!r}")
    if not candidate.exists():
        raise Refused(f"{str(candidate)!r} does not exist")
    return candidate


def read_verified(path: Path, expected: str | None, pinned_by: str = "the manifest") -> tuple[bytes, str]:
    """(bytes, their sha256), read once; refused when `expected` is given and differs."""
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if expected is not None and digest != expected.lower():
        raise Refused(f"sha256 of {path.name!r} is {digest}, {pinned_by} says {expected.lower()}")
    return data, digest
