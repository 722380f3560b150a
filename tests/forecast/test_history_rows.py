"""The history matrix grows into spare rows and shrinks in place: the same numbers as a matrix
rebuilt from scratch, without a second copy of the whole history while services arrive."""

from __future__ import annotations

import numpy as np
import pytest
import redis

from forecast.history_cache import HistoryCache
from forecast.prometheus_source import Reading

WIDTH = 30
END = 1_000_000


def reading(counts: dict[str, list[float]], scraped: list[bool]) -> Reading:
    return Reading(END - WIDTH, {k: np.array(v, dtype=float) for k, v in counts.items()}, np.array(scraped))


def test_services_arriving_land_in_spare_rows_with_the_values_a_fresh_matrix_holds(redis_db):
    cache = HistoryCache(redis.Redis.from_url(redis_db), WIDTH, topup=3, chunk=WIDTH)
    cache._advance(END)
    cache._expected = 200  # what a cold fill counts before its first chunk
    rng = np.random.default_rng(3)
    scraped = [m % 7 != 3 for m in range(WIDTH)]
    expected: dict[str, np.ndarray] = {}
    buffers = []
    for step in range(6):
        names = [f"ns/s{step}-{k}" for k in range(40)]
        counts = {n: list(rng.integers(0, 5, WIDTH).astype(float)) for n in names}
        cache._add(sorted(counts))
        cache._store(reading(counts, scraped), sorted(counts))
        buffers.append(cache._rows)  # held: distinct buffers stay distinct objects
        for n, v in counts.items():
            expected[n] = np.where(scraped, v, np.nan)
    # 200 counted, 200 arrived 40 at a time: one buffer for all of them (no copy); the next 40
    # go past the count plus its eighth: one growth, the values carried over
    assert all(b is buffers[0] for b in buffers[:5]) and buffers[5] is not buffers[0]
    assert cache.matrix.shape == (240, WIDTH) and np.shares_memory(cache.matrix, cache._rows)
    for n, row in expected.items():
        np.testing.assert_array_equal(cache.matrix[cache._row[n]], row.astype(np.float32))


def test_a_new_service_is_zero_where_others_were_scraped_and_nan_elsewhere(redis_db):
    cache = HistoryCache(redis.Redis.from_url(redis_db), WIDTH, topup=3, chunk=WIDTH)
    cache._advance(END)
    cache._expected = 10  # what a cold fill counted: room for 10 + 1/8 before any copy
    scraped = [m < 20 for m in range(WIDTH)]
    cache._add(["ns/a"])
    cache._store(reading({"ns/a": [1.0] * WIDTH}, scraped), ["ns/a"])
    buffer = cache._rows
    cache._rows[1:] = 7.0  # whatever a spare row held before must not show through
    cache._add(["ns/b"])
    assert cache._rows is buffer  # a spare row: no copy
    np.testing.assert_array_equal(cache.matrix[1], np.where(np.array(scraped), 0.0, np.nan).astype(np.float32))


def test_eviction_keeps_the_remaining_rows_in_place_and_in_order(redis_db):
    cache = HistoryCache(redis.Redis.from_url(redis_db), WIDTH, topup=3, chunk=WIDTH)
    cache._advance(END)
    names = [f"ns/s{k:02d}" for k in range(12)]
    counts = {n: [float(k + 1) if k % 3 else 0.0] * WIDTH for k, n in enumerate(names)}  # every third idle all window
    cache._add(names)
    cache._store(reading(counts, [True] * WIDTH), names)
    buffer = cache._rows
    cache._evict_vanished()
    kept = [n for k, n in enumerate(names) if k % 3]
    assert cache.services == kept and sorted(cache.evicted) == sorted(set(names) - set(kept))
    assert cache._rows is buffer and cache.matrix.shape == (len(kept), WIDTH)
    for n in kept:
        np.testing.assert_array_equal(cache.matrix[cache._row[n]], np.array(counts[n], dtype=np.float32))
    # and a service arriving after the eviction reuses a freed row
    cache._add(["ns/late"])
    assert cache._rows is buffer and cache.services[-1] == "ns/late"


@pytest.mark.parametrize("shift", [1, 7, WIDTH - 1, WIDTH, WIDTH + 5])
def test_advancing_moves_every_row_as_a_whole_matrix_shift_does(redis_db, shift):
    cache = HistoryCache(redis.Redis.from_url(redis_db), WIDTH, topup=3, chunk=WIDTH)
    cache._advance(END)
    names = [f"ns/s{k:04d}" for k in range(2500)]  # more rows than one block
    cache._add(names)
    rng = np.random.default_rng(shift)
    cache.matrix[:] = rng.poisson(2.0, cache.matrix.shape)
    cache.matrix[rng.random(cache.matrix.shape) < 0.2] = np.nan
    before = cache.matrix.copy()
    cache._advance(END + shift)
    expected = np.full_like(before, np.nan)
    if shift < WIDTH:
        expected[:, :-shift] = before[:, shift:]
    np.testing.assert_array_equal(cache.matrix, expected)
    assert cache.end_minute == END + shift
