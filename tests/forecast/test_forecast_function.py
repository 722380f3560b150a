"""The forecast function under func-python, over real HTTP, against real Prometheus and Redis."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import redis
import requests
from cloudevents.core.bindings.http import HTTPMessage, from_http_event, to_binary_event, to_structured_event
from cloudevents.core.v1.event import CloudEvent

from forecast.model_store import ModelStore
from localmode.processes import start_redis
from tests.forecast.conftest import END_MINUTE, GAP
from tests.support.functions import RunningFunction, start_function
from localmode.prometheus_backfill import PRESET_NAMES
from training.publish_forecaster import publish

PING_SOURCE = "/apis/v1/namespaces/predictive-scaling/pingsources/every-minute"


def ping(minute: int, event_id: str) -> CloudEvent:
    return CloudEvent(attributes={
        "type": "dev.knative.sources.ping", "source": PING_SOURCE, "id": event_id,
        "time": datetime.fromtimestamp(minute * 60, timezone.utc), "datacontenttype": "application/json",
    }, data={"tick": "minute"})


def post(url: str, event: CloudEvent, structured: bool = False) -> requests.Response:
    message = to_structured_event(event) if structured else to_binary_event(event)
    return requests.post(url, data=message.body, headers=message.headers, timeout=60)


def reply_of(response: requests.Response) -> CloudEvent:
    return from_http_event(HTTPMessage(headers=dict(response.headers), body=response.content))


def range_queries(prometheus) -> list[dict]:
    log = prometheus.base / "queries.log"
    if not log.exists():
        return []
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [q for q in lines if q.get("params", {}).get("step")]


def start(tmp_path: Path, prometheus_url: str, redis_url: str, root: Path, **env: str) -> RunningFunction:
    return start_function("forecast", {
        "PROMETHEUS_URL": prometheus_url, "REDIS_URL": redis_url, "FORECASTER_ROOT": str(root), **env,
    }, tmp_path / "forecast.log")


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_forecast_equals_the_forecaster_on_the_same_series(preset, backfill, backfilled_prometheus, forecaster_root,
                                                          redis_db, tmp_path):
    fn = start(tmp_path, backfilled_prometheus.url, redis_db, forecaster_root, METRICS_PRESET=preset)
    try:
        response = post(fn.url, ping(END_MINUTE, f"{preset}-1"))
        assert response.status_code == 200, response.text
        event = reply_of(response)
        assert event.get_type() == "io.predictive-scaling.forecast.v1"
        data = event.get_data()
        assert data["horizon_start"] == "2024-11-22T12:00:00Z" and data["metrics"]["preset"] == preset
        by_name = {s["service"]: s for s in data["services"]}
        assert set(by_name) == set(backfill.series)
        model = ModelStore(str(forecaster_root)).refresh()
        assert data["model"]["version"] == model.version and data["model"]["sha256"] == model.sha256
        for name, counts in backfill.series.items():
            history = counts[-10080:]
            direct = model.estimator.predict(history[None, :], start_minute=END_MINUTE - 10080)
            got = by_name[name]
            assert got["status"] == "ok"
            np.testing.assert_allclose([m["point_rps"] * 60 for m in got["minutes"]], direct.point[0], rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose([m["upper_rps"] * 60 for m in got["minutes"]], direct.upper[0], rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose([m["p_any"] for m in got["minutes"]], direct.p_any[0], atol=1e-3)
            # the gap is marked, not read as idle
            assert got["data_window"]["gap_minutes"] == GAP[1] - GAP[0]
            assert got["data_window"]["minutes_with_data"] == 10080 - (GAP[1] - GAP[0])
            # the last observed minutes, as the scale function's pool plan keeps them
            assert got["observed"]["start"] == "2024-11-22T11:55:00Z"
            np.testing.assert_allclose(got["observed"]["requests"], history[-5:], atol=1e-3)
    finally:
        fn.stop()


def test_one_range_query_per_steady_tick_and_duplicates_forecast_once(backfilled_prometheus, forecaster_root,
                                                                     redis_db, tmp_path):
    fn = start(tmp_path, backfilled_prometheus.url, redis_db, forecaster_root)
    client = redis.Redis.from_url(redis_db)
    try:
        assert post(fn.url, ping(END_MINUTE - 30, "a")).status_code == 200  # cold: a week in day-sized chunks
        cold = len(range_queries(backfilled_prometheus))
        assert cold == 7
        for k, minute in enumerate(range(END_MINUTE - 29, END_MINUTE - 25)):
            response = post(fn.url, ping(minute, f"steady-{k}"), structured=k % 2 == 1)
            assert response.status_code == 200
            assert reply_of(response).get_data()["queries"] == 1
        assert len(range_queries(backfilled_prometheus)) == cold + 4
        history = client.llen("forecast:log:models/nasa")
        again = post(fn.url, ping(END_MINUTE - 26, "steady-3"))
        # a 2xx body that is no CloudEvent would be a failed reply (502) at the broker: empty, and said in a header
        assert again.status_code == 202 and again.content == b"" and again.headers["x-duplicate"] == "true"
        assert client.llen("forecast:log:models/nasa") == history
        assert len(range_queries(backfilled_prometheus)) == cold + 4
        latest = json.loads(client.hget("forecast:latest", "models/nasa"))
        assert latest["status"] == "ok" and len(latest["minutes"]) == 5
        lines = [json.loads(line) for line in fn.log_lines() if line.startswith("{")]
        handled = [line for line in lines if line.get("ce_id") == "steady-2"]
        assert handled and handled[0]["services_forecast"] == 2 and "seconds" in handled[0]
    finally:
        fn.stop()


def test_restart_resumes_from_the_redis_history_without_a_week_of_queries(backfilled_prometheus, forecaster_root,
                                                                        redis_db, tmp_path):
    fn = start(tmp_path, backfilled_prometheus.url, redis_db, forecaster_root)
    first = post(fn.url, ping(END_MINUTE - 10, "r1"))
    fn.stop()
    before = len(range_queries(backfilled_prometheus))
    fn = start(tmp_path, backfilled_prometheus.url, redis_db, forecaster_root)
    try:
        response = post(fn.url, ping(END_MINUTE - 9, "r2"))
        assert response.status_code == 200
        assert reply_of(response).get_data()["queries"] == 1
        assert len(range_queries(backfilled_prometheus)) == before + 1
        assert reply_of(first).get_data()["services"][0]["status"] == "ok"
        assert reply_of(response).get_data()["services"][0]["data_window"]["minutes_with_data"] > 10000
    finally:
        fn.stop()


def test_events_it_does_not_handle_get_400(backfilled_prometheus, forecaster_root, redis_db, tmp_path):
    fn = start(tmp_path, backfilled_prometheus.url, redis_db, forecaster_root)
    try:
        # exactly what `func invoke` sends: binary mode, source /boson/fn, type boson.fn
        r = requests.post(fn.url, data=json.dumps({"message": "Hello World"}), timeout=10, headers={
            "ce-specversion": "1.0", "ce-id": "b0e6c6b5", "ce-source": "/boson/fn", "ce-type": "boson.fn",
            "content-type": "application/json"})
        assert r.status_code == 400 and "boson.fn" in r.json()["error"]
        r = requests.post(fn.url, data=b"not an event", headers={"content-type": "text/plain"}, timeout=10)
        assert r.status_code == 400
        assert range_queries(backfilled_prometheus) == []
    finally:
        fn.stop()


def test_prometheus_killed_mid_run_gives_holds_not_forecasts(backfilled_prometheus, forecaster_root, redis_db, tmp_path):
    fn = start(tmp_path, backfilled_prometheus.url, redis_db, forecaster_root, PROMETHEUS_TIMEOUT_SECONDS="2")
    try:
        assert post(fn.url, ping(END_MINUTE - 5, "k1")).status_code == 200
        backfilled_prometheus.stop()
        response = post(fn.url, ping(END_MINUTE - 4, "k2"))
        assert response.status_code == 200
        data = reply_of(response).get_data()
        assert "prometheus unavailable" in data["error"]
        assert {s["status"] for s in data["services"]} == {"no-data"}
        assert all("prometheus unavailable" in s["reason"] for s in data["services"])
        assert all("minutes" not in s for s in data["services"])
        logged = [json.loads(line) for line in fn.log_lines() if '"k2"' in line]
        assert logged and logged[0]["services_without_forecast"] == 2
    finally:
        fn.stop()


def test_stale_data_is_not_forecast(backfilled_prometheus, forecaster_root, redis_db, tmp_path):
    fn = start(tmp_path, backfilled_prometheus.url, redis_db, forecaster_root)
    try:
        response = post(fn.url, ping(END_MINUTE + 30, "late"))  # 30 minutes past the last data
        data = reply_of(response).get_data()
        assert {s["status"] for s in data["services"]} == {"no-data"}
        assert all(s["reason"].startswith("stale") for s in data["services"])
    finally:
        fn.stop()


def test_redis_down_is_a_retryable_503(backfilled_prometheus, forecaster_root, tmp_path):
    own = start_redis(tmp_path / "redis")
    fn = start(tmp_path, backfilled_prometheus.url, own.url, forecaster_root)
    try:
        own.stop()
        r = post(fn.url, ping(END_MINUTE, "no-redis"))
        assert r.status_code == 503 and "redis unavailable" in r.json()["error"]
        assert r.headers.get("retry-after")
    finally:
        fn.stop()


def test_sha256_mismatch_is_refused_and_a_new_version_is_picked_up(backfilled_prometheus, redis_db, tmp_path):
    root = tmp_path / "forecaster"
    publish(root, n_series=8, days=9, max_train_rows=3000, max_iter=10)
    manifest = json.loads((root / "manifest.json").read_text())
    good = manifest["current"]["sha256"]
    manifest["current"]["sha256"] = "0" * 64
    (root / "manifest.json").write_text(json.dumps(manifest))
    fn = start_function("forecast", {"PROMETHEUS_URL": backfilled_prometheus.url, "REDIS_URL": redis_db,
                                     "FORECASTER_ROOT": str(root)}, tmp_path / "f.log", wait_ready=False)
    try:
        r = requests.get(f"{fn.url}/health/readiness", timeout=5)
        assert r.status_code == 500 and "sha256" in r.text
        data = reply_of(post(fn.url, ping(END_MINUTE, "bad-model"))).get_data()
        assert data["services"] and {s["status"] for s in data["services"]} == {"no-data"}
        assert "sha256" in data["services"][0]["reason"]
        manifest["current"]["sha256"] = good
        (root / "manifest.json").write_text(json.dumps(manifest))
        data = reply_of(post(fn.url, ping(END_MINUTE, "fixed-model"))).get_data()
        assert {s["status"] for s in data["services"]} == {"ok"} and data["model"]["sha256"] == good
        newer = publish(root, n_series=8, days=9, seed=1, max_train_rows=3000, max_iter=10)["current"]
        data = reply_of(post(fn.url, ping(END_MINUTE + 1, "newer-model"))).get_data()
        assert data["model"]["version"] == newer["version"] != good[:12]
    finally:
        fn.stop()
