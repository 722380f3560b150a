"""The per-service minute history the features need, kept across ticks without re-reading it.

Why this shape: the features look a week back, and a week of 10,000 services is 100 million
samples, more than Prometheus answers in one query (50 million by default) and far too much to
move every minute. So the history lives in this process as one float32 matrix (services x
minutes, NaN = gap) aligned on a shared end minute, and each tick reads only the last few
minutes (`topup`) in one range query. Redis keeps a durable copy, one ring buffer per service
(a string of float32, minute m at byte (m mod width) * 4, written with SETRANGE), so that a
restarted or scaled-from-zero function instance resumes without a week-long back-fill. Only a
service seen for the first time, or a stretch the function missed, is read in chunks.

A cold fill (a week for every service) is saved as it goes: each chunk lands in the rings, and
FILL_KEY records how far the fill got, so a pod killed mid-fill resumes where it stopped instead
of starting over. Chunks are sized so that one answer holds at most `max_points` samples: the
function's peak memory is bounded by that (times FILL_CONCURRENCY, the answers in flight: while
one is stored, Prometheus evaluates the next), not by the fleet's size. Rings are written many
per Redis call (a script), never one command per service. A service seen for the first
time whose back-fill fails is left out of this tick (and tried again on the next one): it never
fails the tick for the others. A service with no sample in the whole window (it has gone) is
dropped from the matrix and its ring deleted.
"""

from __future__ import annotations

import itertools
import json
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import cast

import numpy as np
import redis

from .prometheus_source import PrometheusSource, PrometheusUnavailable

RING_PREFIX = "forecast:ring:"
END_KEY = "forecast:ring-end"
FILL_KEY = "forecast:ring-fill"
"""JSON {"end": E, "done": D} while a cold fill toward end E has stored the minutes before D."""
EVICT_BLOCK = 1000
"""Rows per pass when looking for services without a sample (bounded temporary memory)."""
RING_FLUSH_MINUTES = 1440
"""The cold fill writes its rings (and records its progress) once this many minutes are read:
a restart reads at most this much again, plus the chunks in flight."""
SHIFT_BLOCK = 32
"""Rows per step when the history moves on by a minute (`_advance`)."""
RING_BATCH = 500
"""Rings written per script call, and read per MGET: bounded work per Redis call."""

# SETRANGE the same minutes of many rings: KEYS are the rings, ARGV the byte offset, the bytes
# before the ring wraps, the bytes per ring, then every ring's bytes back to back (one argument).
_WRITE_RINGS = """
local at, head, size = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local blob = ARGV[4]
for i, key in ipairs(KEYS) do
  local part = string.sub(blob, (i - 1) * size + 1, i * size)
  redis.call('SETRANGE', key, at, string.sub(part, 1, head))
  if head < size then
    redis.call('SETRANGE', key, 0, string.sub(part, head + 1))
  end
end
return #KEYS
"""


class HistoryCache:
    def __init__(self, client: redis.Redis, width: int, topup: int, chunk: int, max_points: int = 1_000_000,
                 concurrency: int = 2):
        self.redis = client
        self.width = width
        self.topup = topup
        self.chunk = chunk
        self.max_points = max_points
        self.concurrency = concurrency
        self.services: list[str] = []
        self._row: dict[str, int] = {}
        self._rows = np.empty((0, width), dtype=np.float32)
        """The matrix's buffer: its first len(services) rows are `matrix`, the rest spare (`_reserve`)."""
        self.matrix = self._rows
        self.end_minute: int | None = None
        self.pending: list[str] = []
        """Services seen this tick whose back-fill failed: not forecast yet, tried again next tick."""
        self.evicted: list[str] = []
        self._evicted_hour: int | None = None
        self._expected = 0
        self._density = 1.0
        """Samples per service and minute in a read (`PrometheusSource.samples_per_minute`)."""
        self._loaded = False
        self._write_rings = client.register_script(_WRITE_RINGS)

    def start_minute(self) -> int:
        assert self.end_minute is not None
        return self.end_minute - self.width

    # -- updating --------------------------------------------------------------------------
    def update(self, source: PrometheusSource, end_minute: int, now_minute: int | None = None) -> None:
        """Bring every service up to `end_minute` (exclusive); `now_minute` is the wall clock's.
        A failed read (PrometheusUnavailable) leaves what is stored consistent: the cold fill
        resumes from its last chunk, a top-up is simply read again next tick."""
        if not self._loaded:
            self._load_from_redis(end_minute if now_minute is None else now_minute)
        self.pending, self.evicted = [], []
        if self.end_minute is not None and end_minute < self.end_minute:
            return  # an older tick (a redelivery): history already covers it
        fill = self._fill_progress()
        if fill is not None and fill[0] == self.end_minute and end_minute - fill[0] < self.width:
            self._cold_fill(source, fill[0], fill[1])  # a fill that was interrupted: finish it first
        if self.end_minute is None or end_minute - self.end_minute >= self.width:
            self._cold_fill(source, end_minute, end_minute - self.width)
            return
        start = self.end_minute - self.topup  # the last few minutes again: late scrapes land
        readings = self._read_chunks(source, start, end_minute, None)
        new = sorted({s for r in readings for s in r.counts} - set(self._row))
        earlier = []
        if new:
            try:
                earlier = self._read_chunks(source, end_minute - self.width, start, new, zeros=False)
            except PrometheusUnavailable:
                self.pending, new = new, []
        self._advance(end_minute)
        self._add(new)
        for reading in readings:
            self._store(reading, self.services)
        for reading in earlier:
            self._store(reading, new)
        if end_minute // 60 != self._evicted_hour:
            self._evict_vanished()  # once an hour of the loop's clock: it scans the whole matrix
        self._persist_end()

    def _cold_fill(self, source: PrometheusSource, end_minute: int, done: int) -> None:
        """Read [done, end_minute) chunk by chunk, storing and recording progress after each."""
        if self.end_minute != end_minute:
            self._advance(end_minute)
            self._persist_end()
        self.redis.set(FILL_KEY, json.dumps({"end": end_minute, "done": done}))
        counted = min(self.chunk, self.width)
        self._expected = max(len(self.services), source.count_services(end_minute, counted))
        self._density = source.samples_per_minute(end_minute, counted, self._expected)
        step = self._chunk_minutes()
        chunks = [(a, min(a + step, end_minute)) for a in range(done, end_minute, step)]
        # `concurrency` queries in flight (Prometheus evaluates the next while this one is decoded
        # and stored), consumed in order so that FILL_KEY always records a finished prefix; never
        # more than `concurrency` answers held at once.
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="fill")
        flight: deque = deque()
        queued = iter(chunks)
        try:
            for a, b in itertools.islice(queued, self.concurrency):
                flight.append(pool.submit(source.read, a, b, None, zeros=False))
            scraped = self._scraped_columns()  # one pass (a resumed fill has columns already), then kept up
            flushed, known = done, len(self.services)  # the rings hold [.., flushed) of the first `known` rows
            while flight:
                reading = flight.popleft().result()
                self._add(sorted(set(reading.counts) - set(self._row)), scraped)
                self._store(reading, self.services, rings=False)
                offset = reading.start_minute - self.start_minute()
                lo, hi = max(0, offset), min(self.width, offset + len(reading.scraped))
                if hi > lo:
                    scraped[lo:hi] |= reading.scraped[lo - offset: hi - offset]
                done_to = reading.start_minute + len(reading.scraped)
                del reading
                following = next(queued, None)
                if following is not None:
                    flight.append(pool.submit(source.read, *following, None, zeros=False))
                if done_to - flushed >= RING_FLUSH_MINUTES or not flight:
                    self._flush_rings(done, flushed, done_to, known)
                    flushed, known = done_to, len(self.services)
                    self.redis.set(FILL_KEY, json.dumps({"end": end_minute, "done": done_to}))
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        self.redis.delete(FILL_KEY)
        self._expected = 0
        self._evict_vanished()

    def _chunk_minutes(self) -> int:
        """Minutes per query so that an answer holds at most `max_points` samples (the fleet's
        size counted before a cold fill, or known)."""
        services = max(1, len(self.services), self._expected)
        return max(10, min(self.chunk, int(self.max_points / (services * self._density))))

    def _read_chunks(self, source, start: int, end: int, services: list[str] | None, zeros: bool = True):
        readings = []
        a = start
        while a < end:
            b = min(a + self._chunk_minutes(), end)
            readings.append(source.read(a, b, services, zeros=zeros))
            a = b
        return readings

    def _fill_progress(self) -> tuple[int, int] | None:
        raw = cast("bytes | None", self.redis.get(FILL_KEY))
        if raw is None:
            return None
        try:
            fill = json.loads(raw)
            return int(fill["end"]), int(fill["done"])
        except (ValueError, KeyError, TypeError):
            return None

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
            # a block of rows at a time: source and target overlap, so NumPy copies the source
            # first; for the whole matrix that copy is the whole history again (385 MiB at 10,000).
            # Small blocks: their copy stays in the CPU's cache and the allocator reuses it (blocks
            # of 1,000 rows, 40 MB each, took ~3x as long)
            for a in range(0, len(self.matrix), SHIFT_BLOCK):
                rows = self.matrix[a:a + SHIFT_BLOCK]
                rows[:, :-shift] = rows[:, shift:]
                rows[:, -shift:] = np.nan
        self.end_minute = end_minute

    def _scraped_columns(self) -> np.ndarray:
        """The minutes any known service has a value in (they were scraped)."""
        scraped = np.zeros(self.width, dtype=bool)
        for a in range(0, len(self.matrix), EVICT_BLOCK):  # a block of rows at a time (bounded memory)
            scraped |= (~np.isnan(self.matrix[a:a + EVICT_BLOCK])).any(axis=0)
        return scraped

    def _add(self, services: list[str], scraped: np.ndarray | None = None) -> None:
        """New rows: a minute any known service has a value in was scraped, so a service seen
        only now had no series then, which is idle (0); elsewhere NaN until read. `scraped`:
        those minutes, when the caller keeps them (the cold fill: a pass over the whole matrix
        per chunk that brings new services was ~0.4 s each at 10,000)."""
        if not services:
            return
        if scraped is None:
            scraped = self._scraped_columns()
        known = len(self.services)
        for name in services:
            self._row[name] = len(self.services)
            self.services.append(name)
        self._reserve(len(self.services))
        self.matrix = self._rows[: len(self.services)]
        self.matrix[known:] = np.nan
        self.matrix[known:, scraped] = 0.0

    def _reserve(self, rows: int) -> None:
        """Room for `rows` services. The matrix is a view of the first rows of a larger buffer
        (`_rows`), so a new service lands in a spare row: growing by a copy would hold the old
        and the new matrix at once (twice the history, 770 MB at 10,000 services). Spare rows
        are never written until used, so they cost address space, not memory. The buffer grows
        to what a cold fill counted first (`_expected`), then by an eighth at a time."""
        if rows <= len(self._rows):
            return
        capacity = max(rows + rows // 8, self._expected + self._expected // 8, 64)
        grown = np.empty((capacity, self.width), dtype=np.float32)
        grown[: len(self.matrix)] = self.matrix
        self._rows, self.matrix = grown, grown[: len(self.matrix)]

    def _evict_vanished(self) -> None:
        """A service without one sample in the whole window is gone (or never served): drop it,
        so Redis holds only what is forecast. Its row would forecast nothing anyway."""
        self.evicted = []
        if self.end_minute is not None:
            self._evicted_hour = self.end_minute // 60
        if not len(self.matrix):
            return
        # NaN > 0 is False; a block of rows at a time: no float copy of the whole matrix (10,000
        # services x a week is 400 MB more peak memory, once an hour)
        has = np.concatenate([(self.matrix[a:a + EVICT_BLOCK] > 0).any(axis=1)
                              for a in range(0, len(self.matrix), EVICT_BLOCK)])
        if has.all():
            return
        self.evicted = [s for s, h in zip(self.services, has) if not h]
        self.redis.delete(*[RING_PREFIX + s for s in self.evicted])
        self.services = [s for s, h in zip(self.services, has) if h]
        for to, row in enumerate(np.flatnonzero(has)):  # kept rows move up, in place: no second matrix
            if to != row:
                self._rows[to] = self._rows[row]
        self.matrix = self._rows[: len(self.services)]
        self._row = {s: i for i, s in enumerate(self.services)}

    def _flush_rings(self, begun: int, flushed: int, to: int, known: int) -> None:
        """The cold fill's minutes [flushed, to) from the matrix to the rings, and [begun, to) for
        the rows added since the last flush (from `known` on: new rows are appended): RING_BATCH
        rings per script call, one call at a time (bounded memory: no pipeline of the whole
        fleet's bytes)."""
        start = self.start_minute()
        for rows, first in ((range(0, known), flushed), (range(known, len(self.services)), begun)):
            lo, hi = max(0, first - start), min(self.width, to - start)
            if hi <= lo:
                continue
            for k in range(rows.start, rows.stop, RING_BATCH):
                end = min(k + RING_BATCH, rows.stop)
                self._write_ring_columns(self.services[k:end], self.matrix[k:end, lo:hi], lo, self.redis)

    def _write_ring_columns(self, names: list[str], block: np.ndarray, lo: int, client) -> None:
        """One script call: the columns [lo, lo + block's width) of `names`' rings."""
        at = (self.start_minute() + lo) % self.width
        width = block.shape[1]
        self._write_rings(keys=[RING_PREFIX + name for name in names],
                          args=[at * 4, min(width, self.width - at) * 4, width * 4, block.astype("<f4").tobytes()],
                          client=client)

    def _store(self, reading, services: list[str], rings: bool = True) -> None:
        """Write a reading's minutes for `services` into the matrix and (`rings`) the Redis
        rings: one block for all of them (a service without a series is 0 where scraped, NaN
        elsewhere), and the rings in batches of RING_BATCH per script call (the same minutes for
        each). The cold fill writes its rings a day at a time instead (`_flush_rings`): a script
        call per chunk per batch cost the function ~12 s of command packing at 10,000."""
        assert self.end_minute is not None
        offset = reading.start_minute - self.start_minute()
        n = len(reading.scraped)
        lo, hi = max(0, offset), min(self.width, offset + n)
        if hi <= lo or not services:
            return
        block = np.zeros((len(services), hi - lo), dtype=np.float32)
        have = [(k, values) for k, values in ((k, reading.counts.get(name)) for k, name in enumerate(services))
                if values is not None]
        if have:  # one copy and one NaN pass for the block, not a call per service
            block[[k for k, _ in have]] = np.stack([values[lo - offset: hi - offset] for _, values in have])
            block[np.isnan(block)] = 0.0
        block[:, ~reading.scraped[lo - offset: hi - offset]] = np.nan
        if services is self.services:
            self.matrix[:, lo:hi] = block  # every row, in order: no index list
        else:
            self.matrix[[self._row[name] for name in services], lo:hi] = block
        if not rings:
            return
        pipe = self.redis.pipeline(transaction=False)
        for k in range(0, len(services), RING_BATCH):
            self._write_ring_columns(services[k:k + RING_BATCH], block[k:k + RING_BATCH], lo, pipe)
        pipe.execute()

    def _persist_end(self) -> None:
        if self.end_minute is not None:
            self.redis.set(END_KEY, self.end_minute)

    def _load_from_redis(self, now_minute: int) -> None:
        """Resume from the rings a previous instance left (all aligned on END_KEY). Rings that
        claim to end after this tick (a clock from the future: a forged or skewed event of an
        older version) are not trusted: the history is read again."""
        end = cast("bytes | None", self.redis.get(END_KEY))
        if end is not None and int(end) <= now_minute:
            names = sorted(k.decode()[len(RING_PREFIX):] for k in self.redis.scan_iter(RING_PREFIX + "*", count=1000))
            self.end_minute = int(end)
            for name in names:
                self._row[name] = len(self.services)
                self.services.append(name)
            self._reserve(len(names))
            self.matrix = self._rows[: len(names)]
            self.matrix[:] = np.nan
            order = (np.arange(self.start_minute(), self.end_minute) % self.width)
            for k in range(0, len(names), RING_BATCH):  # 10,000 rings are 400 MB: never in one reply
                batch = names[k:k + RING_BATCH]
                for name, raw in zip(batch, cast("list[bytes | None]", self.redis.mget([RING_PREFIX + n for n in batch]))):
                    ring = np.full(self.width, np.nan, dtype=np.float32)
                    if raw:
                        data = np.frombuffer(raw[: self.width * 4], dtype="<f4")
                        ring[: len(data)] = data
                    self.matrix[self._row[name]] = ring[order]
            fill = self._fill_progress()
            if fill is not None and fill[0] == self.end_minute:
                self.matrix[:, fill[1] - self.start_minute():] = np.nan  # not read yet
        elif end is not None:
            self.redis.delete(FILL_KEY)
        self._loaded = True
