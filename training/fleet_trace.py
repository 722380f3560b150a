"""A fleet trace: many services' request counts in one file, read once, arrivals made per second.

Form (../shared/traces/README.md): CSV `timestamp,service,requests`, one row per (bin, service)
with requests > 0 (a bin without a row is idle for that service), and a sidecar `<file>.json`
with `bin_seconds`, `start`, `end` (exclusive) and `services` (every service, also those that
never had a request). Bad input raises `FleetTraceError` naming the file and the line.

Per-second arrivals: a 1 s fleet is used as it is. A wider bin (ServeGen's 600 s windows, whose
counts are exact) gives no arrival times, so they are generated: a bin's n requests are placed
uniformly at random over its seconds (a Poisson process conditioned on its exact count, i.e. a
multinomial over the bin's seconds), by a generator seeded with (seed, service index, day), so
that any day can be regenerated alone and every run with the same seed sees the same arrivals.
Within a 600 s window the rate is therefore flat: bursts shorter than a window are not in the
source and are not invented here.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DAY_S = 86_400


class FleetTraceError(ValueError):
    """The fleet file or its sidecar is malformed: the message names the file and the line."""


@dataclass(frozen=True)
class FleetTrace:
    name: str
    bin_seconds: int
    start: int
    """Epoch second of the first bin (a multiple of 60)."""
    end: int
    """Epoch second the span ends at (exclusive)."""
    services: tuple[str, ...]
    bins: np.ndarray
    """Bin index of every row (int64), relative to `start`."""
    service_index: np.ndarray
    """Service of every row, an index into `services`."""
    counts: np.ndarray
    """Requests of every row (int64, > 0)."""
    seed: int = 0

    @property
    def seconds(self) -> int:
        return self.end - self.start

    @property
    def minutes(self) -> int:
        return self.seconds // 60

    @property
    def start_minute(self) -> int:
        return self.start // 60

    @property
    def days(self) -> int:
        return math.ceil(self.seconds / DAY_S)

    def totals(self) -> np.ndarray:
        return np.bincount(self.service_index, weights=self.counts, minlength=len(self.services)).astype(np.int64)

    def day_arrivals(self, day: int) -> np.ndarray:
        """Per-second arrivals of every service over one day of the span: (services, seconds)."""
        first, last = day * DAY_S, min(self.seconds, (day + 1) * DAY_S)
        out = np.zeros((len(self.services), last - first), dtype=np.int32)
        lo, hi = np.searchsorted(self._row_seconds(), [first, last])
        if hi <= lo:
            return out
        if self.bin_seconds == 1:
            np.add.at(out, (self.service_index[lo:hi], self._row_seconds()[lo:hi] - first), self.counts[lo:hi])
            return out
        width = self.bin_seconds
        rows = np.arange(lo, hi)
        for service in np.unique(self.service_index[rows]):
            mine = rows[self.service_index[rows] == service]
            rng = np.random.default_rng([self.seed, int(service), day])
            spread = rng.multinomial(self.counts[mine], np.full(width, 1.0 / width))
            offsets = self.bins[mine] * width - first
            for offset, seconds in zip(offsets, spread):
                out[service, offset:offset + width] += seconds[: max(0, min(width, last - first - offset))]
        return out

    def minute_counts(self) -> np.ndarray:
        """Per-minute requests of every service (services, minutes), from the per-second
        arrivals (so a 600 s window's generated arrivals decide its minutes)."""
        out = np.zeros((len(self.services), self.minutes))
        for day in range(self.days):
            seconds = self.day_arrivals(day)
            usable = seconds.shape[1] - seconds.shape[1] % 60
            m0 = day * DAY_S // 60
            out[:, m0:m0 + usable // 60] = seconds[:, :usable].reshape(len(self.services), -1, 60).sum(axis=2)
        return out

    def _row_seconds(self) -> np.ndarray:
        cached = getattr(self, "_seconds_cache", None)
        if cached is None:
            cached = self.bins * self.bin_seconds
            object.__setattr__(self, "_seconds_cache", cached)
        return cached


def load_fleet(path: Path, seed: int = 0) -> FleetTrace:
    path = Path(path)
    sidecar = Path(str(path) + ".json")
    meta = _read_sidecar(sidecar)
    bin_s, start, end, services = meta["bin_seconds"], meta["start"], meta["end"], meta["services"]
    index = {name: i for i, name in enumerate(services)}
    bins: list[int] = []
    who: list[int] = []
    counts: list[int] = []
    try:
        f = open(path, newline="")
    except OSError as e:
        raise FleetTraceError(f"{path}: cannot read: {e.strerror}") from None
    with f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != ["timestamp", "service", "requests"]:
            raise FleetTraceError(f"{path}:1: header must be timestamp,service,requests, got {header}")
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != 3:
                raise FleetTraceError(f"{path}:{line}: expected 3 fields, got {len(row)}")
            ts_text, service, req_text = row
            try:
                ts, requests = int(ts_text), int(req_text)
            except ValueError:
                raise FleetTraceError(f"{path}:{line}: timestamp and requests must be integers, got {ts_text!r}, {req_text!r}") from None
            if service not in index:
                raise FleetTraceError(f"{path}:{line}: service {service!r} is not in {sidecar.name}'s services")
            if not start <= ts < end:
                raise FleetTraceError(f"{path}:{line}: timestamp {ts} outside the sidecar's span [{start}, {end})")
            if (ts - start) % bin_s:
                raise FleetTraceError(f"{path}:{line}: timestamp {ts} is not on a {bin_s} s bin boundary from {start}")
            if requests <= 0:
                raise FleetTraceError(f"{path}:{line}: requests must be > 0 (idle bins have no row), got {requests}")
            bins.append((ts - start) // bin_s)
            who.append(index[service])
            counts.append(requests)
    order = np.lexsort((np.array(who, dtype=np.int64), np.array(bins, dtype=np.int64)))
    b, w, c = (np.array(x, dtype=np.int64)[order] for x in (bins, who, counts))
    if len(b) > 1:
        dup = (np.diff(b) == 0) & (np.diff(w) == 0)
        if dup.any():
            i = int(np.argmax(dup))
            raise FleetTraceError(f"{path}: service {services[w[i]]!r} has two rows for timestamp {start + b[i] * bin_s}")
    return FleetTrace(path.name, bin_s, start, end, tuple(services), b, w, c, seed)


def _read_sidecar(sidecar: Path) -> dict:
    try:
        text = sidecar.read_text()
    except OSError as e:
        raise FleetTraceError(f"{sidecar}: cannot read the sidecar: {e.strerror}") from None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as e:
        raise FleetTraceError(f"{sidecar}:{e.lineno}: not JSON: {e.msg}") from None
    if not isinstance(meta, dict):
        raise FleetTraceError(f"{sidecar}:1: expected an object with bin_seconds, start, end, services")
    for key, kind in (("bin_seconds", int), ("start", int), ("end", int), ("services", list)):
        if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool):
            raise FleetTraceError(f"{sidecar}: {key!r} must be {'an integer' if kind is int else 'a list'}, got {meta.get(key)!r}")
    bin_s, start, end, services = meta["bin_seconds"], meta["start"], meta["end"], meta["services"]
    if bin_s <= 0 or (bin_s > 60 and bin_s % 60) or (bin_s < 60 and 60 % bin_s) or DAY_S % bin_s:
        raise FleetTraceError(f"{sidecar}: bin_seconds must divide a minute or be whole minutes dividing a day, got {bin_s}")
    if start % 60 or start % bin_s and bin_s <= 60:
        raise FleetTraceError(f"{sidecar}: start {start} must be on a minute boundary")
    if end <= start or (end - start) % bin_s or (end - start) % 60:
        raise FleetTraceError(f"{sidecar}: end {end} must be after start {start} by whole bins and minutes")
    if not services or not all(isinstance(s, str) and s for s in services) or len(set(services)) != len(services):
        raise FleetTraceError(f"{sidecar}: services must be distinct non-empty names")
    return meta
