"""The model repository the pool serves: one directory (a mounted volume) whose manifest.json
lists each model artifact (name, version, format, path, sha256), the shape `make models` and
`training.publish_model` write, so that `models/` is a repository as it is.

Verified at start, before the pool reports ready, from the manifest alone, so that a
10,000-entry repository is ready in well under a second (`make bench-pool`): the manifest
parses, every name is a DNS label (it is the first label of the model's host), every entry
records a sha256 (64 hex digits) and a path that cannot leave the directory by its text (no
absolute path, no `..`), and when MODEL_REPOSITORY_SHA256 is pinned the manifest's own digest
equals it. The files themselves are checked when a model loads, never before and never
skipped: the path is resolved inside the directory (symlinks included) and the bytes read are
hashed and compared with the manifest's sha256 before they are loaded
(`artifacts.load_artifact`): a tampered or missing file is refused at its load, and only that
model is. Each entry keeps what a load reads of its manifest object (`SERVED_KEYS`) as compact
JSON bytes (~0.5 KiB for the examples), parsed again only when the model loads: an unloaded
entry costs ~1 KiB of memory (`make bench-pool` measures it).
"""

from __future__ import annotations

import hashlib
import re
import sys
from array import array
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import orjson

from .artifacts import MANIFEST, resolve_inside
from .errors import ModelRefused
from .runtime import formats, modules


class RepositoryRefused(ModelRefused):
    """The manifest cannot be served; the pool stays up, not ready, and says why."""


DNS_LABEL = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")  # fullmatch: `$` would let a trailing newline through
"""An RFC 1035 label, as Kubernetes names a Service (DNS-1035): it starts with a letter, so no
model is named like the first label of an IP address (a pod's, which Prometheus scrapes)."""
SHA256 = re.compile(r"[0-9a-fA-F]{64}")  # fullmatch, as DNS_LABEL
FORMAT_NAMES = {"onnx": "onnx", "skops": "skops", "joblib": "joblib", "mlflow": "mlflow", "auto": "auto"}
"""One string object per format name (an entry holds a reference, not a copy)."""
SERVED_KEYS = ("name", "version", "format", "path", "sha256", "server", "example")
"""What a load reads of a manifest entry (the publishing report, `verification` and `converter`,
is the publisher's record, not kept in memory per entry)."""
RUNS_CODE = {"onnx": False, "skops": False, "joblib": True}
"""Whether a format's file runs code when loaded, known without reading it (MLflow: its MLmodel says)."""


@dataclass(slots=True)
class RepositoryEntry:
    name: str
    version: str | None
    format: str
    path: str
    """As listed: relative to the repository directory (resolved inside it at load)."""
    sha256: str
    blob: bytes = field(repr=False, compare=False)
    """The manifest entries' served keys, all of them in one bytes object (`raw` is this one's):
    one allocation for the repository, not one per entry."""
    start: int = field(repr=False, compare=False)
    end: int = field(repr=False, compare=False)
    raw_hash: int = field(repr=False)
    """Of `raw`: a republished entry (another `server` block or `example`) compares unequal."""
    runs_code: bool | None = None
    """Pickle-based (joblib, MLflow): loading it runs code. None until settled (`_settle`)."""
    refused: str | None = None
    """Why the pool will not load this entry, known from the manifest alone."""

    @property
    def raw(self) -> bytes:
        """The manifest entry's served keys as written (the ONNX `server` block, the warm-up
        `example`), compact JSON."""
        return self.blob[self.start:self.end]

    @property
    def entry(self) -> dict[str, Any]:
        return orjson.loads(self.raw)


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
        object.__setattr__(self, "by_name", {n: sorted(v, key=_version_order) if len(v) > 1 else v
                                             for n, v in sorted(by_name.items())})

    @property
    def names(self) -> list[str]:
        return list(self.by_name)

    def versions(self, name: str) -> list[str | None]:
        """Oldest first; the last is what an unversioned request gets (Triton's `latest`)."""
        return self.by_name.get(name, [])


def read_repository(root: Path, formats: tuple[str, ...], pinned_sha256: str | None,
                    source: str = "MODEL_REPOSITORY_SHA256") -> Repository:
    manifest = root / MANIFEST
    try:
        raw = manifest.read_bytes()
    except OSError as exc:
        raise RepositoryRefused(f"cannot read the repository manifest {str(manifest)!r}: {exc.strerror or exc}") from None
    digest = hashlib.sha256(raw).hexdigest()
    if pinned_sha256 is not None and digest != pinned_sha256:
        raise RepositoryRefused(f"sha256 of {str(manifest)!r} is {digest}, {source} pins {pinned_sha256}")
    try:
        doc = orjson.loads(raw)
        artifacts = doc["artifacts"]
        if not isinstance(artifacts, list):
            raise TypeError("artifacts is not a list")
    except (ValueError, KeyError, TypeError) as exc:
        raise RepositoryRefused(f"{str(manifest)!r} is not a valid manifest (an object with an artifacts list): {exc}") from None
    del raw
    problems: list[str] = []
    candidates: dict[tuple[str, str | None], Any] = {}
    """(name, version) -> its one listed _Listed, or {format: _Listed} when listed in several."""
    wanted = set(formats)
    checked = _names_and_digests_valid(artifacts)
    for i, item in enumerate(artifacts):
        try:
            listed = _entry(item, wanted, checked)
        except ModelRefused as exc:
            problems.append(f"artifacts[{i}]: {exc}")
            if len(problems) > 20:
                break
            continue
        if listed is None:
            continue
        key = (listed[0], listed[1])
        seen = candidates.get(key)
        if seen is None:
            candidates[key] = listed
            continue
        by_format = seen if isinstance(seen, dict) else {seen[2]: seen}
        if listed[2] in by_format:
            problems.append(f"artifacts[{i}]: {listed[0]!r} version {listed[1]!r} is listed twice as {listed[2]}")
        by_format[listed[2]] = listed
        candidates[key] = by_format
    if problems:
        raise RepositoryRefused(f"{str(manifest)!r} does not verify: " + "; ".join(problems[:20]))
    # Pack what is kept of every entry into two objects (its fields as text, its served keys as
    # bytes), free everything the parse made, then make the entries from those: their small
    # objects are then allocated where the parsed manifest was, not interleaved with it, so the
    # freed memory goes back to the kernel (interleaved, they kept ~5 KiB per entry resident).
    chosen_listed = []
    for by_format in candidates.values():
        if not isinstance(by_format, dict):
            chosen_listed.append(by_format)
            continue
        try:
            pick = choose_format({f: _listed_entry(v, b"", 0) for f, v in by_format.items()}, formats,
                                 pinned_sha256 is not None, root)
        except ModelRefused as exc:
            problems.append(str(exc))
            continue
        if pick is not None:
            chosen_listed.append(by_format[pick.format])
    blob = b"".join(listed[5] for listed in chosen_listed)
    sizes = array("Q", (len(listed[5]) for listed in chosen_listed))
    hashes = array("q", (hash(listed[5]) for listed in chosen_listed))
    fields = "\n".join("\t".join((name, version or "", fmt, path, sha)) for name, version, fmt, path, sha, _ in chosen_listed)
    del doc, artifacts, candidates, chosen_listed
    models: dict[tuple[str, str | None], RepositoryEntry] = {}
    offset = 0
    for line, size, raw_hash in zip(fields.split("\n"), sizes, hashes):
        name, version, fmt, path, sha = line.split("\t")
        end = offset + size
        entry = RepositoryEntry(sys.intern(name), sys.intern(version) if version else None, FORMAT_NAMES.get(fmt, fmt),
                                path, sha, blob, offset, end, raw_hash, RUNS_CODE.get(fmt))
        offset = end
        entry = _settle(entry, pinned_sha256 is not None, root)
        models[(entry.name, entry.version)] = entry
    del fields
    if problems:
        raise RepositoryRefused(f"{str(manifest)!r} does not verify: " + "; ".join(problems))
    if not models:
        raise RepositoryRefused(f"{str(manifest)!r} lists no model in a served format ({', '.join(formats)})")
    repository = Repository(root, digest, pinned_sha256 is not None, models)
    _give_back_freed_memory()
    return repository


def _give_back_freed_memory() -> None:
    """glibc keeps freed heap pages (here: the per-entry JSON buffers, ~4 KiB each, between
    the entries' objects) resident until told; malloc_trim returns them. Elsewhere a no-op."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _listed_entry(listed: tuple, blob: bytes, offset: int) -> RepositoryEntry:
    name, version, fmt, path, sha, raw = listed
    if not blob:
        blob, offset = raw, 0
    return RepositoryEntry(sys.intern(name), sys.intern(version) if version else None, fmt, path, sha, blob,
                           offset, offset + len(raw), hash(raw), RUNS_CODE.get(fmt))


def choose_format(by_format: Mapping[str, RepositoryEntry], formats: tuple[str, ...], pinned: bool,
                  root: Path) -> RepositoryEntry | None:
    """The first format in the preference order that can be loaded; when none can (pickles
    without a pinned manifest), the first listed one, which then says why it is refused."""
    listed = []
    for fmt in formats:
        if fmt in by_format:
            entry = _settle(by_format[fmt], pinned, root)
            if entry.refused is None:
                return entry
            listed.append(entry)
    return listed[0] if listed else None


_ALL_LABELS = re.compile(r"(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?\n)*")
_ALL_SHA256 = re.compile(r"(?:[0-9a-fA-F]{64}\n)*")


def _names_and_digests_valid(artifacts: list) -> bool:
    """Whether every entry's name is a DNS label and its sha256 64 hex digits, checked in two
    regex passes over all of them joined by newlines (which neither may contain) instead of two
    per entry: 10,000 entries were 20,000 Python-level matches at start. False sends every entry
    through the per-entry checks, which say which entry fails and why."""
    try:
        names = "".join(item["name"] + "\n" for item in artifacts)
        digests = "".join(item["sha256"] + "\n" for item in artifacts)
    except (TypeError, KeyError):
        return False
    if names.count("\n") != len(artifacts) or digests.count("\n") != len(artifacts):
        return False  # a newline inside a name or digest would split it into two that pass
    return _ALL_LABELS.fullmatch(names) is not None and _ALL_SHA256.fullmatch(digests) is not None


def _entry(item: Any, wanted: set[str], checked: bool = False) -> tuple | None:
    """One manifest object checked by its text alone (no file is touched): (name, version,
    format, path, sha256, its served keys as JSON bytes), or None when its format is not served.
    `checked`: every name and sha256 of the manifest is known valid (`_names_and_digests_valid`)."""
    if not isinstance(item, dict):
        raise ModelRefused("is not an object")
    name, path, sha = item.get("name"), item.get("path"), item.get("sha256")
    if not checked and (not isinstance(name, str) or not DNS_LABEL.fullmatch(name)):
        raise ModelRefused(f"name {str(name)[:80]!r} is not a DNS label (lower-case letters, digits and '-', "
                           "at most 63, starting with a letter, ending with a letter or digit): it is the first label of "
                           "the model's host")
    if not isinstance(path, str) or not path or path.startswith("/") or ".." in path.split("/") or "\\" in path:
        raise ModelRefused(f"{name!r} has no path inside the repository (a relative path without '..')")
    if not checked and (not isinstance(sha, str) or not SHA256.fullmatch(sha)):
        raise ModelRefused(f"{name!r} ({path}) records no sha256 (64 hex digits)")
    version = str(item["version"]) if item.get("version") not in (None, "") else None
    fmt = item.get("format") or "auto"
    fmt = FORMAT_NAMES.get(fmt) or FORMAT_NAMES.get(str(fmt).lower()) or str(fmt).lower()
    if fmt == "auto":
        fmt = _format_of(path)
    if fmt not in modules():
        raise ModelRefused(f"{name!r} ({path}) has unknown format {fmt[:40]!r}")
    if fmt not in wanted:
        return None
    kept = {k: item[k] for k in SERVED_KEYS if k in item}
    return name, version, fmt, path, str(sha).lower(), orjson.dumps(kept)  # a str: checked above or by the caller


def _format_of(path: str) -> str:
    """MODEL_FORMAT=auto from the path's text: a suffix, else a directory (an MLflow model)."""
    suffix = "." + path.rsplit(".", 1)[1] if "." in path.rsplit("/", 1)[-1] else ""
    for name, fmt in formats().items():
        if suffix and suffix in fmt.suffixes:
            return name
    return "mlflow"


def _settle(entry: RepositoryEntry, pinned: bool, root: Path) -> RepositoryEntry:
    """Whether the pool may load it: a pickle-based file only from a pinned manifest. Known
    from the format, except an MLflow directory's (its MLmodel names its flavour, read here
    only for an entry that the preference order reaches)."""
    if entry.runs_code is False or (entry.runs_code and (pinned or entry.refused)):
        return entry
    runs_code = entry.runs_code
    if runs_code is None:
        try:
            resolved = resolve_inside(root, entry.path)
            _, _, runs_code = modules()[entry.format].model_file(resolved, entry.format, root)
        except ModelRefused as exc:
            return replace(entry, runs_code=True, refused=str(exc))
    refused = None
    if runs_code and not pinned:
        refused = (f"{entry.path!r} is pickle-based (it runs code when loaded): the pool loads it only when the "
                   "manifest's own sha256 is pinned in MODEL_REPOSITORY_SHA256")
    return replace(entry, runs_code=runs_code, refused=refused)


def _version_order(version: str | None) -> tuple:
    if version is None:
        return (0, 0, "")
    return (1, int(version), "") if version.isdigit() else (2, 0, version)
