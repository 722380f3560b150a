"""The forecast function under faults and hostile input (it holds under faults), over real HTTP
against real Prometheus and Redis. Each test is a regression test of one way the loop broke."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import redis
import requests

from localmode.fault_proxy import FaultProxy
from localmode.processes import start_prometheus
from tests.forecast.conftest import END_MINUTE
from tests.forecast.test_forecast_function import PING_SOURCE, ping, post, range_queries, reply_of, start
from tests.support.functions import start_function
from localmode.prometheus_backfill import PRESET_NAMES, create_blocks, write_openmetrics


def _prometheus(tmp_path: Path, series: dict[str, np.ndarray], start_minute: int, preset: str, **layout):
    with (tmp_path / "h.om").open("w") as out:
        write_openmetrics(out, series, start_minute, presets=[preset], **layout)
    create_blocks(tmp_path / "h.om", tmp_path / "prom" / "data")
    return start_prometheus(tmp_path / "prom")


def _ring(redis_url: str, service: str, minute: int, width: int = 10080) -> float:
    raw = redis.Redis.from_url(redis_url).get(f"forecast:ring:{service}")
    return float(np.frombuffer(raw, dtype="<f4")[minute % width])


@pytest.mark.parametrize("preset", ["knative-1.21", "istio"])
def test_targets_down_are_a_gap_never_idle(preset, forecaster_root, redis_db, tmp_path):
    """Every target failing its scrapes (`up` 0, no counters) for the last 20 minutes: the
    service must read as unobserved (a gap, then stale: held), not as idle (forecast 0)."""
    start_minute = END_MINUTE - 1440
    prometheus = _prometheus(tmp_path, {"models/busy": np.full(1440, 30.0)}, start_minute, preset,
                             down=[(END_MINUTE - 20, END_MINUTE)])
    fn = start(tmp_path, prometheus.url, redis_db, forecaster_root, METRICS_PRESET=preset)
    try:
        data = reply_of(post(fn.url, ping(END_MINUTE, "blind"))).get_data()
        (entry,) = data["services"]
        assert entry["status"] == "no-data" and entry["reason"].startswith("stale"), entry
        assert entry["data_window"]["gap_minutes_last_hour"] >= 19
    finally:
        fn.stop()
        prometheus.stop()


class _Counter:
    """A real scrape target: infer_requests_total of one service, counting up."""

    def __init__(self) -> None:
        self.value = 0
        counter = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                counter.value += 5
                body = (f'infer_requests_total{{namespace="models",service="live"}} {counter.value}\n').encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.target = f"127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def _now_ping(minute_s: int, event_id: str):
    event = ping(0, event_id)
    event = type(event)(attributes={**event.get_attributes(), "time": datetime.now(timezone.utc)},
                        data=event.get_data())
    return event


def test_live_prometheus_with_its_target_down_holds(forecaster_root, redis_db, tmp_path):
    """The real scrape loop: a target answers, then goes away (connection refused, `up` 0)."""
    minute_s = 2
    counter = _Counter()
    prometheus = start_prometheus(tmp_path / "prom", [counter.target], scrape_interval_s=0.25, job="infer")
    fn = start(tmp_path, prometheus.url, redis_db, forecaster_root, METRICS_PRESET="infer",
               MINUTE_SECONDS=str(minute_s), STALE_AFTER_MINUTES="2", FILL_CHUNK_MINUTES="2000")
    try:
        time.sleep(4 * minute_s)
        data = reply_of(post(fn.url, _now_ping(minute_s, "up"))).get_data()
        assert {s["service"]: s["status"] for s in data["services"]} == {"models/live": "ok"}
        counter.stop()
        time.sleep(5 * minute_s)
        data = reply_of(post(fn.url, _now_ping(minute_s, "down"))).get_data()
        (entry,) = data["services"]
        assert entry["status"] == "no-data" and entry["reason"].startswith("stale"), entry
        assert entry["data_window"]["gap_minutes_last_hour"] >= 3
    finally:
        fn.stop()
        prometheus.stop()
        counter.stop()


def test_a_ping_from_the_future_is_refused_and_freezes_nothing(backfilled_prometheus, forecaster_root,
                                                               redis_db, tmp_path):
    fn = start(tmp_path, backfilled_prometheus.url, redis_db, forecaster_root)
    client = redis.Redis.from_url(redis_db)
    try:
        future = int(time.time() // 60) + 8 * 1440
        r = post(fn.url, ping(future, "future"))
        assert r.status_code == 400 and "ahead" in r.json()["error"]
        assert client.get("forecast:ring-end") is None
        data = reply_of(post(fn.url, ping(END_MINUTE, "real"))).get_data()
        assert {s["status"] for s in data["services"]} == {"ok"}
    finally:
        fn.stop()
    # a clock from the future left in Redis (by an older version) is not trusted after a restart
    client.set("forecast:ring-end", int(time.time() // 60) + 8 * 1440)
    fn = start(tmp_path, backfilled_prometheus.url, redis_db, forecaster_root)
    try:
        data = reply_of(post(fn.url, ping(END_MINUTE + 1, "after-restart"))).get_data()
        assert {s["status"] for s in data["services"]} == {"ok"}
        assert int(client.get("forecast:ring-end")) <= time.time() // 60
    finally:
        fn.stop()


def test_only_the_configured_sources_drive_it(backfilled_prometheus, forecaster_root, redis_db, tmp_path):
    fn = start(tmp_path, backfilled_prometheus.url, redis_db, forecaster_root)
    try:
        forged = ping(END_MINUTE, "forged")
        forged = type(forged)(attributes={**forged.get_attributes(), "source": "/evil"}, data=forged.get_data())
        r = post(fn.url, forged)
        assert r.status_code == 400 and "/evil" in r.json()["error"]
        assert range_queries(backfilled_prometheus) == []
        assert post(fn.url, ping(END_MINUTE, "genuine")).status_code == 200
    finally:
        fn.stop()


def test_a_delivery_in_flight_elsewhere_is_retried_not_acknowledged(backfilled_prometheus, forecaster_root,
                                                                    redis_db, tmp_path):
    fn = start(tmp_path, backfilled_prometheus.url, redis_db, forecaster_root)
    client = redis.Redis.from_url(redis_db)
    try:
        client.set(f"forecast:seen:{PING_SOURCE}|twice", "pending")  # another replica holds it
        r = post(fn.url, ping(END_MINUTE, "twice"))
        assert r.status_code == 503 and r.headers.get("retry-after")
        client.delete(f"forecast:seen:{PING_SOURCE}|twice")  # it failed there and released it
        assert post(fn.url, ping(END_MINUTE, "twice")).status_code == 200
        assert post(fn.url, ping(END_MINUTE, "twice")).status_code == 202
    finally:
        fn.stop()


def test_probes_answer_during_a_long_cold_fill_and_a_killed_fill_resumes(backfill, backfilled_prometheus,
                                                                         forecaster_root, redis_db, tmp_path):
    slow = FaultProxy(backfilled_prometheus.url, delay_s=1.5).start()
    fn = start(tmp_path, slow.url, redis_db, forecaster_root, PROMETHEUS_TIMEOUT_SECONDS="30")
    answered, slowest = [], 0.0
    try:
        result: list = []
        tick = threading.Thread(target=lambda: result.append(post(fn.url, ping(END_MINUTE, "cold"))))
        tick.start()
        while tick.is_alive():
            t0 = time.perf_counter()
            r = requests.get(f"{fn.url}/health/liveness", timeout=1)
            slowest = max(slowest, time.perf_counter() - t0)
            answered.append(r.status_code)
            time.sleep(0.2)
        assert result[0].status_code == 200
        assert len(answered) > 20 and set(answered) == {200} and slowest < 1
    finally:
        fn.stop()
    # the same cold fill, killed after three chunks, resumes there
    client = redis.Redis.from_url(redis_db)
    client.flushdb()
    before = len(range_queries(backfilled_prometheus))
    fn = start(tmp_path, slow.url, redis_db, forecaster_root, PROMETHEUS_TIMEOUT_SECONDS="30")
    def killed_tick() -> None:
        try:
            post(fn.url, ping(END_MINUTE, "killed"))
        except requests.ConnectionError:
            pass  # the function is killed under it: that is the point

    threading.Thread(target=killed_tick, daemon=True).start()
    deadline = time.monotonic() + 60
    while len(range_queries(backfilled_prometheus)) - before < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    fn.process.kill()
    fn.process.wait()
    done_before_kill = len(range_queries(backfilled_prometheus)) - before
    assert client.get("forecast:ring-fill") is not None
    slow.delay_s = 0
    fn = start(tmp_path, backfilled_prometheus.url, redis_db, forecaster_root)
    try:
        mid = len(range_queries(backfilled_prometheus))
        data = reply_of(post(fn.url, ping(END_MINUTE, "resumed"))).get_data()
        # FILL_CONCURRENCY (2) queries were in flight: one answered but not yet stored is read again
        assert len(range_queries(backfilled_prometheus)) - mid <= 7 - done_before_kill + 3
        assert client.get("forecast:ring-fill") is None
        for entry in data["services"]:
            assert entry["status"] == "ok"
            series = backfill.series[entry["service"]][-10080:]
            assert entry["data_window"]["minutes_with_data"] == int((~np.isnan(series)).sum())
        # the resumed history is the history: the forecast equals an uninterrupted run's
        assert _ring(redis_db, "models/nasa", END_MINUTE - 5000) == series_at(backfill, "models/nasa", END_MINUTE - 5000)
    finally:
        fn.stop()
        slow.stop()


def series_at(backfill, service: str, minute: int) -> float:
    return float(backfill.series[service][minute - backfill.start_minute])


def test_a_new_service_whose_backfill_fails_does_not_hold_the_others(forecaster_root, redis_db, tmp_path):
    start_minute = END_MINUTE - 1440
    counts = {"models/old": np.full(1440, 6.0), "models/late": np.full(1440, 2.0)}
    prometheus = _prometheus(tmp_path, counts, start_minute, "knative-1.21", born={"models/late": END_MINUTE - 3})
    # the back-fill names the new service in a regex selector: fail exactly those queries; and
    # refuse URLs over 256 bytes, as a proxy with a URL limit does
    proxy = FaultProxy(prometheus.url, max_url_bytes=256, fail=lambda path, body: 503 if b"%3D~" in body else None)
    proxy.start()
    fn = start(tmp_path, proxy.url, redis_db, forecaster_root, METRICS_PRESET="knative-1.21")
    try:
        data = reply_of(post(fn.url, ping(END_MINUTE - 10, "before"))).get_data()
        assert [s["service"] for s in data["services"]] == ["models/old"]
        data = reply_of(post(fn.url, ping(END_MINUTE, "late-seen"))).get_data()
        by_name = {s["service"]: s for s in data["services"]}
        assert by_name["models/old"]["status"] == "ok"
        assert by_name["models/late"]["status"] == "no-data" and "back-fill pending" in by_name["models/late"]["reason"]
        proxy.fail = None
        data = reply_of(post(fn.url, ping(END_MINUTE + 1, "late-filled"))).get_data()
        assert {s["service"]: s["status"] for s in data["services"]} == {"models/old": "ok", "models/late": "ok"}
        assert all(len(s.path) <= 256 for s in proxy.seen)
    finally:
        fn.stop()
        proxy.stop()
        prometheus.stop()


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_requests_of_a_pod_started_from_zero_are_counted(preset, forecaster_root, redis_db, tmp_path):
    """A service at zero gets 4 requests; the pod they start is first scraped already at 4."""
    start_minute = END_MINUTE - 1440
    counts = np.zeros(1440)
    born = END_MINUTE - 30
    counts[born - start_minute] = 4
    counts[born - start_minute + 3] = 2
    prometheus = _prometheus(tmp_path, {"models/steady": np.full(1440, 1.0), "models/fresh": counts}, start_minute,
                             preset, born={"models/fresh": born})
    fn = start(tmp_path, prometheus.url, redis_db, forecaster_root, METRICS_PRESET=preset)
    try:
        assert post(fn.url, ping(END_MINUTE, f"fresh-{preset}")).status_code == 200
        assert _ring(redis_db, "models/fresh", born) == 4
        assert _ring(redis_db, "models/fresh", born + 3) == 2
        assert _ring(redis_db, "models/fresh", born - 1) == 0
        assert _ring(redis_db, "models/steady", born) == 1  # long-lived series: unchanged
    finally:
        fn.stop()
        prometheus.stop()


def test_istio_maps_revisions_to_services_by_their_labels_not_by_a_suffix(forecaster_root, redis_db, tmp_path):
    """A Revision named by the user (`infer-wine-blue`): its traffic belongs to `infer-wine`."""
    start_minute = END_MINUTE - 1440
    series = {"models/infer-wine": np.full(1440, 4.0), "models/nasa": np.full(1440, 2.0)}
    prometheus = _prometheus(tmp_path, series, start_minute, "istio", revisions={"models/infer-wine": "infer-wine-blue"})
    fn = start(tmp_path, prometheus.url, redis_db, forecaster_root, METRICS_PRESET="istio")
    try:
        data = reply_of(post(fn.url, ping(END_MINUTE, "named"))).get_data()
        assert {s["service"]: s["status"] for s in data["services"]} == {"models/infer-wine": "ok", "models/nasa": "ok"}
        assert _ring(redis_db, "models/infer-wine", END_MINUTE - 10) == 4
    finally:
        fn.stop()
        prometheus.stop()


def test_a_service_gone_for_the_whole_window_is_dropped_and_its_keys_expire(forecaster_root, redis_db, tmp_path):
    start_minute = END_MINUTE - 1440
    series = {"models/busy": np.full(1440, 3.0), "models/gone": np.zeros(1440)}
    prometheus = _prometheus(tmp_path, series, start_minute, "knative-1.21")
    fn = start(tmp_path, prometheus.url, redis_db, forecaster_root)
    client = redis.Redis.from_url(redis_db)
    try:
        data = reply_of(post(fn.url, ping(END_MINUTE, "evict"))).get_data()
        assert [s["service"] for s in data["services"]] == ["models/busy"]
        assert client.exists("forecast:ring:models/busy") and not client.exists("forecast:ring:models/gone")
        assert 0 < client.ttl("forecast:log:models/busy") <= 86400
    finally:
        fn.stop()
        prometheus.stop()
