"""A recorded per-minute series is read without Prometheus' `sum by`: the function sums each
service's series itself, and every reading equals the one Prometheus' own sum gives. Read as
stored (an instant query of a range selector, the heartbeat on its own), it equals the samples
written, minute by minute."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import redis

from forecast import history_cache
from forecast.metric_presets import MetricQuery, PRESETS
from forecast.prometheus_source import PrometheusSource, recorded, unsummed
from localmode.processes import start_prometheus
from localmode.prometheus_backfill import create_blocks

START = 28_000_000
MINUTES = 120
LATE = 80
"""svc-6 has its first sample at this minute (a cold fill meets it in a late chunk)."""
RECORDED = "sum by (namespace, service) (last_over_time(test:requests_per_minute{{selector}}[{window}]))"


def query(promql: str = RECORDED) -> MetricQuery:
    return MetricQuery("custom", promql, service_label="service", namespace_label="namespace", heartbeat='job="rec"')


WRITTEN: dict[str, np.ndarray] = {}
"""namespace/service -> the sum of its series' samples per minute as written (NaN: no sample)."""


@pytest.fixture(scope="module")
def recorded_prometheus(tmp_path_factory):
    """Per-minute samples of a recorded series: some services with two series (the rule keeps
    a revision label), zero minutes, missing minutes, a negative and a NaN sample, a service
    that appears late; a heartbeat with a hole."""
    base: Path = tmp_path_factory.mktemp("recorded")
    rng = np.random.default_rng(11)
    lines = ["# TYPE test:requests_per_minute unknown"]
    for s in range(7):
        for revision in range(1 + s % 2):
            values = rng.integers(0, 4, MINUTES).astype(float)
            for m in range(MINUTES):
                if (m + s + revision) % 9 == 0 or (s == 6 and m < LATE):
                    continue  # no sample that minute (svc-6: none before LATE)
                v = values[m]
                if s == 3 and m == 40:
                    v = -2.0 if revision == 0 else 1.0
                if s == 5 and m == 50:
                    v = float("nan")
                total = WRITTEN.setdefault(f"ns/svc-{s}", np.full(MINUTES, np.nan))
                total[m] = v if np.isnan(total[m]) else total[m] + v
                text = "NaN" if np.isnan(v) else f"{v:.0f}"
                lines.append(f'test:requests_per_minute{{namespace="ns",service="svc-{s}",revision="r{revision}"}} '
                             f"{text} {(START + m + 1) * 60}")
    lines.append("# TYPE up unknown")
    for t in range(START * 60, (START + MINUTES + 1) * 60, 20):
        if not (START + 70) * 60 <= t < (START + 75) * 60:
            lines.append(f'up{{job="rec",instance="a"}} 1 {t}')
    lines.append("# EOF")
    om = base / "history.om"
    om.write_text("\n".join(lines) + "\n")
    create_blocks(om, base / "data")
    server = start_prometheus(base)
    yield server
    server.stop()


def test_only_the_recorded_shape_is_unsummed():
    assert unsummed(query()).promql == "last_over_time(test:requests_per_minute{{selector}}[{window}])"
    assert unsummed(query(RECORDED.replace("by (namespace, service)", "by (service, namespace)"))) is not None
    assert unsummed(query(RECORDED.replace("by (namespace, service)", "by (namespace, revision)"))) is None
    assert unsummed(query(RECORDED.replace("last_over_time", "max_over_time"))) is None
    assert all(unsummed(preset) is None for preset in PRESETS.values())  # per-pod counters: sent whole
    assert recorded(query()).promql == "test:requests_per_minute{{selector}}"
    assert all(recorded(preset) is None for preset in PRESETS.values())


@pytest.mark.parametrize("zeros", [True, False])
@pytest.mark.parametrize("services", [None, ["ns/svc-1", "ns/svc-3", "ns/svc-5"]])
def test_the_function_s_sum_reads_what_prometheus_sum_reads(recorded_prometheus, zeros, services):
    here = PrometheusSource(recorded_prometheus.url, query(), 30)
    there = PrometheusSource(recorded_prometheus.url, query(), 30)
    here.recorded = None  # read with a range query (what a top-up sends for any other query)
    there.unsummed = there.recorded = None  # Prometheus sums, as for any other query
    assert here.unsummed is not None
    mine = here.read(START + 5, START + MINUTES, services, zeros=zeros)
    theirs = there.read(START + 5, START + MINUTES, services, zeros=zeros)
    assert np.array_equal(mine.scraped, theirs.scraped) and not theirs.scraped.all()
    assert sorted(mine.counts) == sorted(theirs.counts) and len(theirs.counts) == (len(services) if services else 7)
    for key in theirs.counts:
        np.testing.assert_array_equal(mine.counts[key], theirs.counts[key], err_msg=key)
        np.testing.assert_array_equal(mine.series_for(key), theirs.series_for(key), err_msg=key)
    # the cases that tell the two apart if the sum were wrong are in there
    assert np.isnan(theirs.counts["ns/svc-5"]).any()
    if not zeros:
        assert np.isnan(theirs.counts["ns/svc-3"][40 - 5])  # -2 + 1 is not > 0: left out
    else:
        assert theirs.counts["ns/svc-3"][40 - 5] == -1.0


@pytest.mark.parametrize("zeros", [True, False])
@pytest.mark.parametrize("services", [None, ["ns/svc-1", "ns/svc-3", "ns/svc-5"]])
def test_the_recorded_series_read_as_stored_is_what_was_written(recorded_prometheus, zeros, services):
    source = PrometheusSource(recorded_prometheus.url, query(), 30)
    assert source.recorded is not None
    first = START + 5
    before = source.queries_sent
    reading = source.read(first, START + MINUTES, services, zeros=zeros)
    assert source.queries_sent - before == 2  # the samples, and the heartbeat
    heartbeat = PrometheusSource(recorded_prometheus.url, query(), 30)
    heartbeat.recorded = heartbeat.unsummed = None
    summed = heartbeat.read(first, START + MINUTES, services, zeros=zeros)
    assert np.array_equal(reading.scraped, summed.scraped) and not reading.scraped.all()  # the heartbeat's hole
    names = services or sorted(WRITTEN)
    for name in names:
        expected = WRITTEN[name][5:].copy()
        if not zeros:
            expected[~(expected > 0)] = np.nan
        if np.isnan(expected).all():
            assert name not in reading.counts
            continue
        np.testing.assert_array_equal(reading.counts[name], expected, err_msg=name)
        # where every series of the service has its own sample, Prometheus' `last_over_time` of
        # the minute reads the same (a minute without one reads the minute before's sample there:
        # Prometheus 2's range includes its left end, where the previous sample lies)
        every = np.ones(MINUTES - 5, dtype=bool)
        for revision in range(1 + int(name[-1]) % 2):
            every &= (np.arange(5, MINUTES) + int(name[-1]) + revision) % 9 != 0
        np.testing.assert_array_equal(reading.counts[name][every], summed.counts[name][every], err_msg=name)
        assert (~every).any()
    assert sorted(reading.counts) == sorted(n for n in names if not np.isnan(
        np.where(WRITTEN[n][5:] > 0, WRITTEN[n][5:], np.nan) if not zeros else WRITTEN[n][5:]).all())
    assert np.isnan(WRITTEN["ns/svc-5"]).any() and (WRITTEN["ns/svc-3"] < 0).any()  # the hard cases are in there


def test_a_rule_run_more_often_than_a_minute_is_counted_in_the_chunk_size(recorded_prometheus):
    source = PrometheusSource(recorded_prometheus.url, query(), 30)
    # 7 services, 10 series, a sample a minute each except every ninth minute (svc-6's from
    # LATE): ~1.23 per service-minute over the last hour
    per_minute = source.samples_per_minute(START + MINUTES, 60, 7)
    assert 1.1 < per_minute < 1.4
    assert source.samples_per_minute(START + MINUTES, 60, 100) == 1.0  # never below one


def test_a_cold_fill_in_chunks_leaves_rings_that_load_back_as_the_same_matrix(recorded_prometheus, redis_db,
                                                                            monkeypatch):
    monkeypatch.setattr(history_cache, "RING_FLUSH_MINUTES", 25)  # rings written every third chunk
    client = redis.Redis.from_url(redis_db)
    try:
        source = PrometheusSource(recorded_prometheus.url, query(), 30)
        width, end = MINUTES - 2, START + MINUTES
        filled = history_cache.HistoryCache(client, width, topup=3, chunk=10)
        filled.update(source, end)
        assert source.recorded is not None and client.get(history_cache.FILL_KEY) is None
        rows = {name: filled.matrix[filled._row[name]] for name in filled.services}
        assert sorted(rows) == sorted(WRITTEN)  # svc-6 arrived in a late chunk
        late = rows["ns/svc-6"]
        assert (late[: LATE - 2 - 10][~np.isnan(late[: LATE - 2 - 10])] == 0).all() and (late[LATE - 2:] > 0).any()
        loaded = history_cache.HistoryCache(client, width, topup=3, chunk=10)
        loaded._load_from_redis(end)
        assert loaded.end_minute == end and sorted(loaded.services) == sorted(rows)
        for name, row in rows.items():
            np.testing.assert_array_equal(loaded.matrix[loaded._row[name]], row, err_msg=name)
        expected = np.where(np.isnan(WRITTEN["ns/svc-0"][2:]), 0.0, WRITTEN["ns/svc-0"][2:])
        scraped = ~np.isnan(rows["ns/svc-0"])
        assert (~scraped).any()  # the heartbeat's hole is a gap in the rings too
        np.testing.assert_array_equal(rows["ns/svc-0"][scraped], np.maximum(expected, 0)[scraped].astype(np.float32))
    finally:
        client.flushdb()
