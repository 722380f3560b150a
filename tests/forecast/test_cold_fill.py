"""The cold fill's read path against a real Prometheus: the byte scanner reads what a JSON parser
reads, a back-fill without the zero minutes reads the same counts, and a newly published
forecaster loads without holding up a tick."""

from __future__ import annotations

import json
import shutil
import threading

import numpy as np
import pytest
import redis
import requests

from forecast import model_store
from forecast.metric_presets import PRESETS
from forecast.prometheus_source import PrometheusSource, _matrix
from forecast.settings import ForecastSettings
from forecast.tick import TickHandler
from tests.forecast.conftest import END_MINUTE
from tests.forecast.test_forecast_function import ping


def test_the_byte_scan_reads_every_series_as_a_json_parser_does(backfilled_prometheus):
    source = PrometheusSource(backfilled_prometheus.url, PRESETS["knative-1.21"], 30)
    promql = source.query.render("", "60s", "600s")
    form = {"query": promql, "start": str((END_MINUTE - 300) * 60), "end": str(END_MINUTE * 60), "step": "60"}
    body = requests.post(f"{backfilled_prometheus.url}/api/v1/query_range", data=form, timeout=30).content
    parsed = json.loads(body)["data"]["result"]
    scanned = list(_matrix(body))
    assert len(parsed) == len(scanned) >= 2
    for expected, (labels, pairs) in zip(parsed, scanned):
        assert labels == expected["metric"]
        assert np.array_equal(pairs, np.array([float(x) for point in expected["values"] for x in point]))
    # what a label may hold cannot confuse it: a quote is escaped inside a JSON string
    tricky = {"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {"service": "a", "path": '/x,"values":[[1,"2"]]}'}, "values": [[60, "NaN"], [120, "+Inf"], [180, "1e+06"]]},
        {"metric": {"service": "b"}, "values": [[60, "-Inf"]]}]}}
    scanned = list(_matrix(json.dumps(tricky, separators=(",", ":")).encode()))
    assert [labels for labels, _ in scanned] == [series["metric"] for series in tricky["data"]["result"]]
    first = scanned[0][1]
    assert np.isnan(first[1]) and first[3] == np.inf and first[5] == 1e6 and scanned[1][1][1] == -np.inf
    with pytest.raises(ValueError):
        list(_matrix(json.dumps({"status": "success", "data": {"resultType": "vector", "result": []}}).encode()))


@pytest.mark.parametrize("name", ["knative-1.21", "infer"])
def test_a_back_fill_without_the_zero_minutes_reads_the_same_counts(backfilled_prometheus, name):
    source = PrometheusSource(backfilled_prometheus.url, PRESETS[name], 30)
    a, b = END_MINUTE - 1440, END_MINUTE
    full, sparse = source.read(a, b), source.read(a, b, zeros=False)
    assert np.array_equal(full.scraped, sparse.scraped) and (~full.scraped).any()  # the gap is a gap in both
    assert set(sparse.counts) <= set(full.counts) and sparse.counts
    for service in full.counts:
        assert np.array_equal(full.series_for(service), sparse.series_for(service), equal_nan=True), service
    zero_minutes = sum(int((v == 0).sum()) for v in full.counts.values())
    sent = sum(int((~np.isnan(v)).sum()) for v in sparse.counts.values())
    assert zero_minutes > 0 and sent == sum(int((~np.isnan(v)).sum()) for v in full.counts.values()) - zero_minutes


def test_a_newly_published_forecaster_loads_without_holding_up_the_tick(backfilled_prometheus, forecaster_root,
                                                                      redis_db, tmp_path, monkeypatch):
    root = tmp_path / "forecaster"
    shutil.copytree(forecaster_root, root)
    handler = TickHandler(ForecastSettings.from_env({
        "PROMETHEUS_URL": backfilled_prometheus.url, "REDIS_URL": redis_db, "FORECASTER_ROOT": str(root),
        "ACCEPTED_SOURCES": "*"}))
    release = threading.Event()
    loading = threading.Event()
    load = model_store.ModelStore._load

    def slow_load(self, entry):  # the refit's artifact is big: its load takes a while
        if entry.get("version") == "refit":
            loading.set()
            assert release.wait(60)
        return load(self, entry)

    monkeypatch.setattr(model_store.ModelStore, "_load", slow_load)
    monkeypatch.setattr("forecast.tick.MODEL_WAIT_S", 0.2)
    try:
        first = handler.handle(ping(END_MINUTE, "t0"))
        assert first.status == 200
        old = first.reply.get_data()["model"]["version"]
        manifest = json.loads((root / "manifest.json").read_text())
        manifest["current"]["version"] = "refit"
        (root / "manifest.json").write_text(json.dumps(manifest))
        during = handler.handle(ping(END_MINUTE + 1, "t1"))  # the load is still running: served with the old one
        assert loading.is_set() and during.status == 200
        data = during.reply.get_data()
        assert data["model"]["version"] == old and {s["status"] for s in data["services"]} == {"ok"}
        release.set()
        handler._loading.join(60)
        after = handler.handle(ping(END_MINUTE + 2, "t2"))
        assert after.reply.get_data()["model"]["version"] == "refit"
    finally:
        release.set()
        handler.close()
        redis.Redis.from_url(redis_db).flushdb()
