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
model is.

The start parses only what the index needs: a typed decode (msgspec) turns each entry into its
five fields and keeps the blocks a load reads (`server`, `example`) as the manifest's own JSON
text, unparsed, and skips the publisher's record (`verification`, `converter`) without building
it: 10,000 entries decode in ~15 ms of CPU where a full parse into dicts took ~170 ms. A
manifest that this decode refuses (an entry that is not an object, say) is parsed in full
instead, which says which entry fails and why. Each entry keeps its blocks as bytes
(~0.3 KiB for the examples), parsed when the model loads: an unloaded entry costs ~1.3 KiB of
memory (`make bench-pool` measures it).
"""

from __future__ import annotations

import hashlib
import re
import sys
from array import array
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import msgspec
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
BLOCK_KEYS = ("server", "example")
"""The served keys kept as JSON text until a load parses them (the others are the entry's fields)."""
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
    """The manifest entries' blocks (`BLOCK_KEYS`), all of them in one bytes object (`raw` is
    this one's): one allocation for the repository, not one per entry."""
    start: int = field(repr=False, compare=False)
    end: int = field(repr=False, compare=False)
    raw_hash: int = field(repr=False)
    """Of `raw`: a republished entry (another `server` block or `example`) compares unequal. The
    text is the manifest's: a manifest rewritten with other whitespace inside a block makes its
    entries unequal too (unloaded by the poll, they load again on their next request)."""
    runs_code: bool | None = None
    """Pickle-based (joblib, MLflow): loading it runs code. None until settled (`_settle`)."""
    refused: str | None = None
    """Why the pool will not load this entry, known from the manifest alone."""

    @property
    def raw(self) -> bytes:
        """The manifest entry's blocks (the ONNX `server` block, the warm-up `example`) as one
        JSON object, the manifest's text of each."""
        return self.blob[self.start:self.end]

    @property
    def entry(self) -> dict[str, Any]:
        """The served keys, as a load reads them (the blocks parsed now, at the load)."""
        entry: dict[str, Any] = orjson.loads(self.raw)
        entry.update(name=self.name, format=self.format, path=self.path, sha256=self.sha256)
        if self.version is not None:
            entry["version"] = self.version
        return entry


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


class _Listed(msgspec.Struct):
    """One manifest entry as the typed decode reads it: the fields as they are (checked by
    `_fields`, as the full parse's are), the blocks as their JSON text, the rest skipped."""
    name: Any = None
    version: Any = None
    format: Any = None
    path: Any = None
    sha256: Any = None
    server: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    example: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET


class _Manifest(msgspec.Struct):
    artifacts: list[_Listed]


_DECODER = msgspec.json.Decoder(_Manifest)


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
    artifacts: list
    try:
        artifacts = _DECODER.decode(raw).artifacts
        typed = True
    except msgspec.DecodeError:  # the full parse says what is wrong, entry by entry
        typed = False
    if not typed:
        try:
            doc = orjson.loads(raw)
            artifacts = doc["artifacts"]
            if not isinstance(artifacts, list):
                raise TypeError("artifacts is not a list")
        except (ValueError, KeyError, TypeError) as exc:
            raise RepositoryRefused(f"{str(manifest)!r} is not a valid manifest (an object with an artifacts list): {exc}") from None
        del doc
    del raw
    problems: list[str] = []
    candidates: dict[tuple[str, str | None], Any] = {}
    """(name, version) -> its one listed _Listed, or {format: _Listed} when listed in several."""
    wanted = set(formats)
    checked = _names_and_digests_valid([(item.name, item.sha256) for item in artifacts] if typed else
                                       [(item.get("name"), item.get("sha256")) if isinstance(item, dict) else (None, None)
                                        for item in artifacts])
    read = _typed_entry if typed else _entry
    for i, item in enumerate(artifacts):
        try:
            listed = read(item, wanted, checked)
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
    del artifacts, candidates, chosen_listed
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


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
"""No path or version holds one (a tab or newline would also split the packed index text)."""
_ALL_LABELS = re.compile(r"(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?\n)*")
_ALL_SHA256 = re.compile(r"(?:[0-9a-fA-F]{64}\n)*")


def _names_and_digests_valid(pairs: list[tuple[Any, Any]]) -> bool:
    """Whether every entry's name is a DNS label and its sha256 64 hex digits (`pairs`: each
    entry's (name, sha256) as listed), checked in two regex passes over all of them joined by
    newlines (which neither may contain) instead of two per entry: 10,000 entries were 20,000
    Python-level matches at start. False sends every entry through the per-entry checks, which
    say which entry fails and why."""
    try:
        names = "".join(name + "\n" for name, _ in pairs)
        digests = "".join(sha + "\n" for _, sha in pairs)
    except TypeError:
        return False
    if names.count("\n") != len(pairs) or digests.count("\n") != len(pairs):
        return False  # a newline inside a name or digest would split it into two that pass
    return _ALL_LABELS.fullmatch(names) is not None and _ALL_SHA256.fullmatch(digests) is not None


def _entry(item: Any, wanted: set[str], checked: bool = False) -> tuple | None:
    """One manifest object of the full parse checked by its text alone (no file is touched):
    (name, version, format, path, sha256, its blocks as JSON bytes), or None when its format is
    not served. `checked`: every name and sha256 of the manifest is known valid
    (`_names_and_digests_valid`)."""
    if not isinstance(item, dict):
        raise ModelRefused("is not an object")
    fields = _fields(item.get("name"), item.get("version"), item.get("format"), item.get("path"), item.get("sha256"),
                     wanted, checked)
    if fields is None:
        return None
    return (*fields, orjson.dumps({k: item[k] for k in BLOCK_KEYS if k in item}))


def _typed_entry(item: _Listed, wanted: set[str], checked: bool = False) -> tuple | None:
    """`_entry` for an entry of the typed decode: the same checks, the blocks kept as the
    manifest's own JSON text (not parsed, not serialized again)."""
    fields = _fields(item.name, item.version, item.format, item.path, item.sha256, wanted, checked)
    if fields is None:
        return None
    server, example = item.server, item.example
    if server is msgspec.UNSET and example is msgspec.UNSET:
        return (*fields, b"{}")
    parts = []
    if server is not msgspec.UNSET:
        parts.append(b'"server":' + bytes(server))
    if example is not msgspec.UNSET:
        parts.append(b'"example":' + bytes(example))
    return (*fields, b"{" + b",".join(parts) + b"}")


def _fields(name: Any, version: Any, fmt: Any, path: Any, sha: Any, wanted: set[str],
            checked: bool) -> tuple | None:
    if not checked and (not isinstance(name, str) or not DNS_LABEL.fullmatch(name)):
        raise ModelRefused(f"name {str(name)[:80]!r} is not a DNS label (lower-case letters, digits and '-', "
                           "at most 63, starting with a letter, ending with a letter or digit): it is the first label of "
                           "the model's host")
    if not isinstance(path, str) or not path or path.startswith("/") or ".." in path.split("/") or "\\" in path:
        raise ModelRefused(f"{name!r} has no path inside the repository (a relative path without '..')")
    if not checked and (not isinstance(sha, str) or not SHA256.fullmatch(sha)):
        raise ModelRefused(f"{name!r} ({path}) records no sha256 (64 hex digits)")
    version = str(version) if version not in (None, "") else None
    if _CONTROL.search(path) or (version is not None and _CONTROL.search(version)):
        raise ModelRefused(f"{name!r} has a control character in its path or version")
    fmt = str(fmt or "auto")
    fmt = FORMAT_NAMES.get(fmt) or FORMAT_NAMES.get(str(fmt).lower()) or str(fmt).lower()
    if fmt == "auto":
        fmt = _format_of(path)
    if fmt not in modules():
        raise ModelRefused(f"{name!r} ({path}) has unknown format {fmt[:40]!r}")
    if fmt not in wanted:
        return None
    return name, version, fmt, path, str(sha).lower()  # a str: checked above or by the caller


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
