"""The forecast function's Prometheus metrics, scraped from the real process after real pings
against the real back-filled Prometheus: the online forecast quality is checked against the
forecasts the function replied and the series Prometheus holds."""

from __future__ import annotations

import numpy as np

from forecast.model_store import ModelStore
from localmode.processes import free_port
from tests.forecast.conftest import END_MINUTE
from tests.forecast.test_forecast_function import ping, post, reply_of, start
from tests.support.metrics import scrape


def test_metrics_after_real_ticks(backfill, backfilled_prometheus, forecaster_root, redis_db, tmp_path):
    port = free_port()
    fn = start(tmp_path, backfilled_prometheus.url, redis_db, forecaster_root, METRICS_PRESET="knative-1.21",
               METRICS_PORT=str(port), METRICS_ADDRESS="127.0.0.1")
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        first_minute = END_MINUTE - 30
        first = reply_of(post(fn.url, ping(first_minute, "q1"))).get_data()
        second_response = post(fn.url, ping(first_minute + 3, "q2"))
        second = reply_of(second_response).get_data()
        got = scrape(url)
        names = sorted(backfill.series)
        assert got.value("forecast_ticks_total", outcome="forecast") == 2
        assert got.value("forecast_tick_duration_seconds_count") == 2
        assert got.value("forecast_services_total", status="ok", reason="") == 2 * len(names)
        assert got.value("forecast_tick_services", status="ok", reason="") == len(names)
        queries = got.value("forecast_prometheus_query_duration_seconds_count", endpoint="query_range")
        assert queries >= 2 and got.total("forecast_prometheus_query_failures_total") == 0
        model = ModelStore(str(forecaster_root)).refresh()
        assert got.value("forecast_model_info", version=model.version, sha256=model.sha256,
                         quantile=str(model.quantile), horizon_minutes=str(model.horizon)) == 1

        # next-minute gauges: what the second reply said
        for entry in second["services"]:
            namespace, service = entry["service"].split("/")
            m = entry["minutes"][0]
            assert abs(got.value("forecast_next_minute_point_requests_per_second", namespace=namespace, service=service)
                       - m["point_rps"]) < 1e-5
            assert abs(got.value("forecast_next_minute_upper_requests_per_second", namespace=namespace, service=service)
                       - m["upper_rps"]) < 1e-5
            assert abs(got.value("forecast_next_minute_p_any", namespace=namespace, service=service) - m["p_any"]) < 1e-4

        # quality: the first tick's forecast of its first minute against what Prometheus holds for it
        errors, squares, naive_errors, base_squares = [], [], [], []
        for entry in first["services"]:
            namespace, service = entry["service"].split("/")
            counts = backfill.series[entry["service"]]
            at = first_minute - backfill.start_minute
            actual = counts[at]
            m = entry["minutes"][0]
            error = abs(m["point_rps"] * 60 - actual) / 60
            square = (m["p_any"] - float(actual > 0)) ** 2
            errors.append(error)
            squares.append(square)
            # skill: against the seasonal naive (same minute yesterday or the last 5 minutes'
            # mean) and the service's base rate over the history read (a week before the tick)
            history = counts[max(0, at - 10080):at]  # NaN in the gap: no data, not idle
            naive = max(np.nan_to_num(counts[at - 1440]) if at >= 1440 else 0.0, np.nan_to_num(history[-5:]).mean())
            base = np.sum(history[~np.isnan(history)] > 0) / np.sum(~np.isnan(history))
            naive_errors.append(abs(naive - actual))
            base_squares.append((base - float(actual > 0)) ** 2)
            mase = got.value("forecast_quality_mase", namespace=namespace, service=service)
            if naive_errors[-1] > 0:
                assert abs(mase - error * 60 / naive_errors[-1]) < 1e-3 * max(1.0, mase)
            skill = got.value("forecast_quality_brier_skill", namespace=namespace, service=service)
            brier = got.value("forecast_quality_brier_score", namespace=namespace, service=service)  # unrounded
            assert abs(skill - (1 - brier / base_squares[-1])) < 1e-3 * max(1.0, abs(skill))
            assert abs(got.value("forecast_quality_mae_requests_per_second", namespace=namespace, service=service)
                       - error) < 1e-4
            assert abs(got.value("forecast_quality_brier_score", namespace=namespace, service=service) - square) < 1e-3
            assert got.value("forecast_quality_scored_minutes", namespace=namespace, service=service) == 1
        assert abs(got.value("forecast_quality_fleet_mae_requests_per_second") - np.mean(errors)) < 1e-4
        assert abs(got.value("forecast_quality_fleet_brier_score") - np.mean(squares)) < 1e-3
        assert got.value("forecast_quality_fleet_scored_minutes") == len(names)
        assert abs(got.value("forecast_quality_fleet_mase") - np.sum(errors) * 60 / np.sum(naive_errors)) < 1e-3
        fleet_brier = got.value("forecast_quality_fleet_brier_score")
        assert abs(got.value("forecast_quality_fleet_brier_skill") - (1 - fleet_brier * len(names) / np.sum(base_squares))) < 1e-3
        assert got.value("forecast_quality_scored_total") == len(names)

        # the same rolling skill rides on the forecast (what the scale function's fallback reads):
        # none before a minute was scored, the gauges' figures once one was (null where undefined)
        assert all("skill" not in entry for entry in first["services"])
        for entry in second["services"]:
            namespace, service = entry["service"].split("/")
            sent = entry["skill"]
            assert sent["minutes"] == 1
            for key, gauge in (("brier_skill", "forecast_quality_brier_skill"), ("mase", "forecast_quality_mase")):
                value = got.value(gauge, namespace=namespace, service=service)
                if np.isfinite(value):
                    assert abs(sent[key] - value) < 1e-3 * max(1.0, abs(value))
                else:
                    assert sent[key] is None

        # Prometheus gone: every service held with that reason class, the failed query counted
        backfilled_prometheus.stop()
        assert post(fn.url, ping(first_minute + 4, "q3")).status_code == 200
        down = scrape(url)
        assert down.value("forecast_tick_services", status="held", reason="prometheus_unavailable") == len(names)
        assert down.value("forecast_services_total", status="held", reason="prometheus_unavailable") == len(names)
        assert down.value("forecast_prometheus_query_failures_total", endpoint="query_range") >= 1
        assert not down.has("forecast_tick_services", status="ok", reason="")
    finally:
        fn.stop()


def test_no_metrics_port_unless_asked(backfilled_prometheus, forecaster_root, redis_db, tmp_path):
    """Local runs of several functions on one machine do not fight over a default port."""
    fn = start(tmp_path, backfilled_prometheus.url, redis_db, forecaster_root)
    try:
        assert not any("metrics served" in line for line in fn.log_lines())
    finally:
        fn.stop()
