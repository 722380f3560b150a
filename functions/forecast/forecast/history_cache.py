"""The per-service minute history the features need, kept across ticks without re-reading it.

Why this shape: the features look a week back, and a week of 10,000 services is 100 million
samples, more than Prometheus answers in one query (50 million by default) and far too much to
move every minute. So the history lives in this process as one float32 matrix (services x
minutes, NaN = gap) aligned on a shared end minute, and each tick reads only the last few
minutes (`topup`) in one range query. Redis keeps a durable copy, one ring buffer per service
(a string of float32, minute m at byte (m mod width) * 4, written with SETRANGE), so that a
restarted or scaled-from-zero function instance resumes without a week-long back-fill. Only a
service seen for the first time, or a stretch the function missed, is read in day-sized chunks.
"""

from __future__ import annotations

import numpy as np
import redis

from .prometheus_source import PrometheusSource

RING_PREFIX = "forecast:ring:"
END_KEY = "forecast:ring-end"


class HistoryCache:
    def __init__(self, client: redis.Redis, width: int, topup: int, chunk: int):
        self.redis = client
        self.width = width
        self.topup = topup
        self.chunk = chunk
        self.services: list[str] = []
        self._row: dict[str, int] = {}
        self.matrix = np.full((0, width), np.nan, dtype=np.float32)
        self.end_minute: int | None = None
        self._loaded = False

    # -- reading ---------------------------------------------------------------------------
    def series(self, service: str) -> np.ndarray:
        return self.matrix[self._row[service]].astype(float)

    def start_minute(self) -> int:
        assert self.end_minute is not None
        return self.end_minute - self.width

    # -- updating --------------------------------------------------------------------------
    def update(self, source: PrometheusSource, end_minute: int) -> None:
        """Bring every service up to `end_minute` (exclusive). All reads happen before any
        change, so a failed read (PrometheusUnavailable) leaves the cache as it was."""
        if not self._loaded:
            self._load_from_redis()
        if self.end_minute is not None and end_minute < self.end_minute:
            return  # an older tick (a redelivery): history already covers it
        if self.end_minute is None or end_minute - self.end_minute >= self.width:
            readings = self._read_chunks(source, end_minute - self.width, end_minute, None)
            self._advance(end_minute)
            self._add(sorted({s for r in readings for s in r.counts} - set(self._row)))
            for reading in readings:
                self._store(reading, self.services)
        else:
            start = self.end_minute - self.topup  # the last few minutes again: late scrapes land
            readings = self._read_chunks(source, start, end_minute, None)
            new = sorted({s for r in readings for s in r.counts} - set(self._row))
            earlier = self._read_chunks(source, end_minute - self.width, start, new) if new else []
            self._advance(end_minute)
            self._add(new)
            for reading in readings:
                self._store(reading, self.services)
            for reading in earlier:
                self._store(reading, new)
        self._persist_end()

    def _read_chunks(self, source, start: int, end: int, services: list[str] | None):
        return [source.read(a, min(a + self.chunk, end), services) for a in range(start, end, self.chunk)]

    def _advance(self, end_minute: int) -> None:
        if self.end_minute is None:
            self.end_minute = end_minute
            return
        shift = end_minute - self.end_minute
        if shift <= 0:
            return
        if shift >= self.width:
            self.matrix[:] = np.nan
        else:
            self.matrix[:, :-shift] = self.matrix[:, shift:]
            self.matrix[:, -shift:] = np.nan
        self.end_minute = end_minute

    def _add(self, services: list[str]) -> None:
        if not services:
            return
        for name in services:
            self._row[name] = len(self.services)
            self.services.append(name)
        grown = np.full((len(self.services), self.width), np.nan, dtype=np.float32)
        grown[: len(self.matrix)] = self.matrix
        self.matrix = grown

    def _store(self, reading, services: list[str]) -> None:
        """Write a reading's minutes for `services` into the matrix and the Redis rings."""
        assert self.end_minute is not None
        offset = reading.start_minute - self.start_minute()
        n = len(reading.scraped)
        lo, hi = max(0, offset), min(self.width, offset + n)
        if hi <= lo:
            return
        pipe = self.redis.pipeline(transaction=False)
        for name in services:
            values = reading.series_for(name)[lo - offset: hi - offset].astype(np.float32)
            self.matrix[self._row[name], lo:hi] = values
            self._write_ring(pipe, name, self.start_minute() + lo, values)
        pipe.execute()

    def _write_ring(self, pipe, name: str, first_minute: int, values: np.ndarray) -> None:
        key = RING_PREFIX + name
        at = first_minute % self.width
        head = min(len(values), self.width - at)
        pipe.setrange(key, at * 4, values[:head].astype("<f4").tobytes())
        if head < len(values):
            pipe.setrange(key, 0, values[head:].astype("<f4").tobytes())

    def _persist_end(self) -> None:
        if self.end_minute is not None:
            self.redis.set(END_KEY, self.end_minute)

    def _load_from_redis(self) -> None:
        """Resume from the rings a previous instance left (all aligned on END_KEY)."""
        end = self.redis.get(END_KEY)
        if end is not None:
            names = sorted(k.decode()[len(RING_PREFIX):] for k in self.redis.scan_iter(RING_PREFIX + "*", count=1000))
            rings = self.redis.mget([RING_PREFIX + n for n in names]) if names else []
            self.end_minute = int(end)
            self.matrix = np.full((0, self.width), np.nan, dtype=np.float32)
            self._add(names)
            order = (np.arange(self.start_minute(), self.end_minute) % self.width)
            for name, raw in zip(names, rings):
                ring = np.full(self.width, np.nan, dtype=np.float32)
                if raw:
                    data = np.frombuffer(raw[: self.width * 4], dtype="<f4")
                    ring[: len(data)] = data
                self.matrix[self._row[name]] = ring[order]
        self._loaded = True
