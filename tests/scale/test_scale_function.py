"""The scale function under func-python, over real HTTP, with its real kubernetes client code
against the API double, and real Redis."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import requests

from tests.scale.conftest import (LABEL, TICK0, assert_spec_never_written, by_service, decisions, forecast,
                                  minutes, rbac_rules, send)
from localmode.kube_api_double import KubeApiDouble

MIN = "autoscaling.knative.dev/min-scale"
WINDOW = "autoscaling.knative.dev/window"


def wait_for(check, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def test_scale_up_before_a_forecast_burst_with_one_warmup(api_double, scale_fn, warmup_sink):
    api_double.add_service("models", "wine", LABEL)
    fn = scale_fn(api_double)
    data = decisions(send(fn, forecast(TICK0, {"models/wine": minutes(upper_rps=42, p_any=0.99)}, "e1")))
    d = by_service(data)["models/wine"]
    assert (d["previous_min_scale"], d["min_scale"], d["applied"]) == (0, 5, True)  # ceil(42 / 10)
    assert d["revisions"] == ["wine-00001"] and "raise to 5" in d["reason"]
    assert api_double.annotations("revisions", "models", "wine-00001")[MIN] == "5"
    # Knative >= 1.21: the revision reconciler carries it to the PodAutoscaler
    assert api_double.annotations("podautoscalers", "models", "wine-00001")[MIN] == "5"
    assert d["warmup"] and wait_for(lambda: len(warmup_sink.hits) == 1)
    assert warmup_sink.hits[0] == {"host": "wine.models.example.com", "path": "/v2/health/ready"}
    assert data["actuation"] == "revision"
    assert_spec_never_written(api_double)


def test_burst_headroom_by_default(api_double, scale_fn):
    # 5.4 req/s fits one 10 req/s pod on average, but its busiest second does not: by default
    # (BURST_RISK 0.1) two pods; sized for the mean, one.
    api_double.add_service("models", "wine", LABEL)
    api_double.add_service("models", "iris", LABEL)
    headroom = scale_fn(api_double, BURST_RISK="")
    decisions(send(headroom, forecast(TICK0, {"models/wine": minutes(5.4, 0.99)}, "b1")))
    mean_only = scale_fn(api_double)
    decisions(send(mean_only, forecast(TICK0, {"models/iris": minutes(5.4, 0.99)}, "b2")))
    assert api_double.annotations("revisions", "models", "wine-00001")[MIN] == "2"
    assert api_double.annotations("revisions", "models", "iris-00001")[MIN] == "1"


def test_by_default_the_window_is_never_touched(api_double, scale_fn):
    api_double.add_service("models", "wine", LABEL)
    fn = scale_fn(api_double, COOLDOWN_SECONDS="0")
    d = by_service(decisions(send(fn, forecast(TICK0, {"models/wine": minutes(0.0, 0.001)}, "idle"))))["models/wine"]
    assert WINDOW not in api_double.annotations("revisions", "models", "wine-00001") and d["window"] is None


def test_idle_forecast_shortens_the_window_and_traffic_restores_it(api_double, scale_fn):
    api_double.add_service("models", "wine", LABEL)
    fn = scale_fn(api_double, COOLDOWN_SECONDS="0", IDLE_WINDOW="6s")
    decisions(send(fn, forecast(TICK0, {"models/wine": minutes(0.0, 0.001)}, "idle")))
    revision = api_double.annotations("revisions", "models", "wine-00001")
    assert revision[WINDOW] == "6s" and revision[MIN] == "0"
    d = by_service(decisions(send(fn, forecast(TICK0 + 1, {"models/wine": minutes(3.0, 0.9)}, "busy"))))["models/wine"]
    revision = api_double.annotations("revisions", "models", "wine-00001")
    assert WINDOW not in revision and revision[MIN] == "1" and d["window"] is None
    assert_spec_never_written(api_double)


def test_a_window_the_user_set_is_left_alone_unless_opted_in(api_double, scale_fn):
    api_double.add_service("models", "mine", LABEL, template_annotations={WINDOW: "120s"})
    api_double.add_service("models", "managed", LABEL, template_annotations={WINDOW: "120s"})
    api_double.touch("serving.knative.dev", "services", "models", "managed", {"predictive-scaling.io/manage-window": "true"})
    fn = scale_fn(api_double, IDLE_WINDOW="6s")
    decisions(send(fn, forecast(TICK0, {"models/mine": minutes(0, 0.0), "models/managed": minutes(0, 0.0)}, "i")))
    assert api_double.annotations("revisions", "models", "mine-00001")[WINDOW] == "120s"
    assert api_double.annotations("revisions", "models", "managed-00001")[WINDOW] == "6s"
    decisions(send(fn, forecast(TICK0 + 1, {"models/managed": minutes(5, 0.99)}, "t")))
    assert api_double.annotations("revisions", "models", "managed-00001")[WINDOW] == "120s"  # the user's, restored


def test_busy_forecast_shortens_the_window_in_place_and_a_quieter_one_restores_it(api_double, scale_fn):
    # BUSY_WINDOW: written on the routed Revision as Knative's own window annotation, carried to
    # its PodAutoscaler (where the autoscaler reads it), never on the Service's spec.
    api_double.add_service("models", "wine", LABEL)
    fn = scale_fn(api_double, BUSY_WINDOW="15s")
    busy = by_service(decisions(send(fn, forecast(TICK0, {"models/wine": minutes(60, 0.999, point_rps=40)}, "busy"))))
    assert busy["models/wine"]["window"] == "15s"
    assert api_double.annotations("revisions", "models", "wine-00001")[WINDOW] == "15s"
    assert api_double.annotations("podautoscalers", "models", "wine-00001")[WINDOW] == "15s"
    # 3 req/s is under 70% of a 10 req/s pod: not busy, the Service's own window (none) comes back
    quiet = by_service(decisions(send(fn, forecast(TICK0 + 1, {"models/wine": minutes(6, 0.999, point_rps=3)}, "quiet"))))
    assert quiet["models/wine"]["window"] is None
    assert WINDOW not in api_double.annotations("revisions", "models", "wine-00001")
    assert WINDOW not in api_double.annotations("podautoscalers", "models", "wine-00001")
    assert_spec_never_written(api_double)


def test_a_busy_last_observed_minute_shortens_the_window_before_the_forecast_says_busy(api_double, scale_fn):
    # The start of an active period: the forecast is not busy yet (3 req/s, P(any) 0.95), but the
    # event's observed block says the minute just ended carried 600 requests (10 req/s, over 70%
    # of a 10 req/s pod): the lever's window goes on; the same forecast after a quiet minute, off.
    api_double.add_service("models", "wine", LABEL)
    fn = scale_fn(api_double, BUSY_WINDOW="15s")

    def event(tick_minute: int, last: float, event_id: str):
        e = forecast(tick_minute, {"models/wine": minutes(12, 0.95, point_rps=3)}, event_id)
        start = datetime.fromtimestamp((tick_minute - 3) * 60, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        e.get_data()["services"][0]["observed"] = {"start": start, "requests": [0.0, 0.0, last]}
        return e

    starting = by_service(decisions(send(fn, event(TICK0, 600.0, "start"))))["models/wine"]
    assert starting["window"] == "15s"
    assert api_double.annotations("revisions", "models", "wine-00001")[WINDOW] == "15s"
    quiet = by_service(decisions(send(fn, event(TICK0 + 1, 60.0, "quiet"))))["models/wine"]
    assert quiet["window"] is None
    assert WINDOW not in api_double.annotations("revisions", "models", "wine-00001")


def test_the_busy_window_annotation_overrides_the_default_and_restores_the_users_window(api_double, scale_fn):
    api_double.add_service("models", "opted", LABEL)
    api_double.add_service("models", "theirs", LABEL, template_annotations={WINDOW: "90s"})
    api_double.touch("serving.knative.dev", "services", "models", "opted", {"predictive-scaling.io/busy-window": "10s"})
    api_double.touch("serving.knative.dev", "services", "models", "theirs",
                     {"predictive-scaling.io/busy-window": "20s", "predictive-scaling.io/manage-window": "true"})
    fn = scale_fn(api_double)  # BUSY_WINDOW unset: off fleet-wide
    busy = minutes(60, 0.999, point_rps=40)
    decisions(send(fn, forecast(TICK0, {"models/opted": busy, "models/theirs": busy}, "b")))
    assert api_double.annotations("revisions", "models", "opted-00001")[WINDOW] == "10s"
    assert api_double.annotations("revisions", "models", "theirs-00001")[WINDOW] == "20s"
    # the lever drops (no longer busy): the Service's own 90 s goes back, in place
    quiet = minutes(2, 0.5, point_rps=1)
    decisions(send(fn, forecast(TICK0 + 1, {"models/opted": quiet, "models/theirs": quiet}, "q")))
    assert WINDOW not in api_double.annotations("revisions", "models", "opted-00001")
    assert api_double.annotations("revisions", "models", "theirs-00001")[WINDOW] == "90s"
    # a bad value is a skipped service with the reason, never a write
    api_double.touch("serving.knative.dev", "services", "models", "opted", {"predictive-scaling.io/busy-window": "3s"})
    bad = decisions(send(fn, forecast(TICK0 + 2, {"models/opted": busy}, "x")))
    assert any("busy-window" in s["reason"] for s in bad["skipped"])
    assert WINDOW not in api_double.annotations("revisions", "models", "opted-00001")
    assert_spec_never_written(api_double)


def test_missing_stale_or_held_forecasts_never_lower(api_double, scale_fn):
    api_double.add_service("models", "wine", LABEL)
    fn = scale_fn(api_double, COOLDOWN_SECONDS="0", MAX_FORECAST_AGE_SECONDS="3600")
    now = int(time.time() // 60)
    decisions(send(fn, forecast(now - 10, {"models/wine": minutes(25, 0.99)}, "up")))
    assert api_double.annotations("revisions", "models", "wine-00001")[MIN] == "3"
    patches = len(api_double.calls("PATCH"))
    held = by_service(decisions(send(fn, forecast(now - 9, {"models/wine": "prometheus unavailable: refused"}, "nodata"))))
    assert held["models/wine"]["min_scale"] == 3 and "no data" in held["models/wine"]["reason"]
    # older than the forecast already applied: out of order, ignored
    old = decisions(send(fn, forecast(now - 70, {"models/wine": minutes(0, 0.0)}, "old")))
    assert old["decisions"] == [] and "out of order" in old["skipped"][0]["reason"]
    # an idle forecast, but minutes older than MAX_FORECAST_AGE_SECONDS: hold
    stale_fn = scale_fn(api_double, COOLDOWN_SECONDS="0", MAX_FORECAST_AGE_SECONDS="60")
    stale = by_service(decisions(send(stale_fn, forecast(now - 8, {"models/wine": minutes(0, 0.0)}, "stale"))))
    assert stale["models/wine"]["min_scale"] == 3 and "old" in stale["models/wine"]["reason"]
    # a service in the opted-in list but absent from the event: hold
    api_double.add_service("models", "other", LABEL)
    absent = by_service(decisions(send(fn, forecast(now - 7, {"models/wine": minutes(25, 0.99)}, "absent"))))
    assert absent["models/other"]["min_scale"] == 0 and "no forecast" in absent["models/other"]["reason"]
    assert api_double.annotations("revisions", "models", "wine-00001")[MIN] == "3"
    assert len([c for c in api_double.calls("PATCH") if c.name == "wine-00001"]) == patches


def test_cooldown_holds_a_raise_then_lowers(api_double, scale_fn):
    api_double.add_service("models", "wine", LABEL)
    api_double.touch("serving.knative.dev", "services", "models", "wine", {"predictive-scaling.io/cooldown": "120"})
    fn = scale_fn(api_double)
    decisions(send(fn, forecast(TICK0, {"models/wine": minutes(15, 0.99)}, "a")))
    held = by_service(decisions(send(fn, forecast(TICK0 + 1, {"models/wine": minutes(0, 0.0)}, "b"))))["models/wine"]
    assert held["min_scale"] == 2 and "cool-down" in held["reason"] and not held["applied"]
    lowered = by_service(decisions(send(fn, forecast(TICK0 + 3, {"models/wine": minutes(0, 0.0)}, "c"))))["models/wine"]
    assert lowered["min_scale"] == 0 and lowered["applied"]
    assert api_double.annotations("revisions", "models", "wine-00001")[MIN] == "0"


def test_conflict_with_a_concurrent_writer_is_reread_and_retried(api_double, scale_fn):
    api_double.add_service("models", "wine", LABEL)
    fn = scale_fn(api_double)
    api_double.before_next_patch(lambda: api_double.touch(
        "serving.knative.dev", "revisions", "models", "wine-00001", {"team": "someone-else"}))
    d = by_service(decisions(send(fn, forecast(TICK0, {"models/wine": minutes(15, 0.99)}, "race"))))["models/wine"]
    assert d["applied"]
    statuses = [c.status for c in api_double.calls("PATCH", "revisions")]
    assert statuses == [409, 200]
    annotations = api_double.annotations("revisions", "models", "wine-00001")
    assert annotations[MIN] == "2" and annotations["team"] == "someone-else"


def test_server_errors_are_retried_with_backoff(api_double, scale_fn):
    api_double.add_service("models", "wine", LABEL)
    api_double.fail(lambda c: c.method == "PATCH", 500, times=2)
    fn = scale_fn(api_double)
    d = by_service(decisions(send(fn, forecast(TICK0, {"models/wine": minutes(15, 0.99)}, "5xx"))))["models/wine"]
    assert d["applied"] and [c.status for c in api_double.calls("PATCH")] == [500, 500, 200]


def test_api_down_beyond_retries_is_a_503_and_the_retry_applies(api_double, scale_fn):
    api_double.add_service("models", "wine", LABEL)
    api_double.fail(lambda c: c.method == "PATCH", 503, times=5)
    fn = scale_fn(api_double, API_RETRIES="2")
    event = forecast(TICK0, {"models/wine": minutes(15, 0.99)}, "retry-me")
    r = send(fn, event)
    assert r.status_code == 503 and r.headers.get("retry-after")
    d = by_service(decisions(send(fn, event)))["models/wine"]  # the broker's redelivery
    assert d["applied"] and api_double.annotations("revisions", "models", "wine-00001")[MIN] == "2"


def test_duplicates_and_out_of_order_events_change_nothing(api_double, scale_fn):
    api_double.add_service("models", "wine", LABEL)
    fn = scale_fn(api_double)
    event = forecast(TICK0 + 5, {"models/wine": minutes(15, 0.99)}, "dup")
    decisions(send(fn, event))
    calls = len(api_double.requests)
    again = send(fn, event, structured=True)
    assert again.status_code == 202 and again.content == b"" and again.headers["x-duplicate"] == "true"
    assert len(api_double.requests) == calls
    older = decisions(send(fn, forecast(TICK0 + 4, {"models/wine": minutes(0, 0.0)}, "older")))
    assert older["decisions"] == [] and "out of order" in older["skipped"][0]["reason"]
    assert api_double.annotations("revisions", "models", "wine-00001")[MIN] == "2"
    assert not api_double.calls("PATCH")[1:]
    log = "\n".join(fn.log_lines())
    assert "out-of-order forecast ignored" in log


def test_unchanged_decisions_make_no_api_call_and_the_list_per_event_mode_lists_each_kind(api_double, scale_fn):
    api_double.add_service("models", "wine", LABEL)
    fn = scale_fn(api_double)
    decisions(send(fn, forecast(TICK0, {"models/wine": minutes(15, 0.99)}, "1")))
    before = len(api_double.requests)
    decisions(send(fn, forecast(TICK0 + 1, {"models/wine": minutes(15, 0.99)}, "2")))
    new = [c for c in api_double.requests[before:] if c.verb != "watch"]
    # the watch-fed cache answers the reads: an unchanged event costs no call at all
    assert new == []
    listing = scale_fn(api_double, API_READS="list")
    decisions(send(listing, forecast(TICK0 + 2, {"models/wine": minutes(15, 0.99)}, "3")))
    before = len(api_double.requests)
    decisions(send(listing, forecast(TICK0 + 3, {"models/wine": minutes(15, 0.99)}, "4")))
    new = api_double.requests[before:]
    assert [(c.method, c.verb, c.resource) for c in new] == [("GET", "list", "services"), ("GET", "list", "revisions")]


def test_services_without_the_label_are_never_touched(api_double, scale_fn):
    api_double.add_service("models", "theirs", {"team": "x"})
    fn = scale_fn(api_double)
    data = decisions(send(fn, forecast(TICK0, {"models/theirs": minutes(50, 0.99)}, "o")))
    assert data["decisions"] == [] and "not opted in" in data["skipped"][0]["reason"]
    assert not [c for c in api_double.requests if c.name and c.name.startswith("theirs")]
    assert MIN not in api_double.annotations("revisions", "models", "theirs-00001")


def test_knative_1_20_patches_the_podautoscaler(scale_fn):
    double = KubeApiDouble(rbac_rules(legacy=True), version="1.20")
    try:
        double.add_service("models", "wine", LABEL)
        fn = scale_fn(double)  # KNATIVE_VERSION=auto: read from the knative-serving namespace
        data = decisions(send(fn, forecast(TICK0, {"models/wine": minutes(15, 0.99)}, "old-knative")))
        assert data["actuation"] == "podautoscaler"
        assert double.annotations("podautoscalers", "models", "wine-00001")[MIN] == "2"
        assert MIN not in double.annotations("revisions", "models", "wine-00001")
        assert [c.resource for c in double.calls("PATCH")] == ["podautoscalers"]
        assert_spec_never_written(double)
    finally:
        double.close()


def test_dry_run_decides_and_patches_nothing(api_double, scale_fn, warmup_sink):
    api_double.add_service("models", "wine", LABEL)
    fn = scale_fn(api_double, DRY_RUN="true")
    d = by_service(decisions(send(fn, forecast(TICK0, {"models/wine": minutes(15, 0.99)}, "dry"))))["models/wine"]
    assert d["min_scale"] == 2 and d["dry_run"] and not d["applied"]
    assert api_double.calls("PATCH") == [] and warmup_sink.hits == []


def test_rollout_gets_the_levers_reapplied_on_the_new_revision(api_double, scale_fn):
    api_double.add_service("models", "wine", LABEL)
    fn = scale_fn(api_double)
    decisions(send(fn, forecast(TICK0, {"models/wine": minutes(15, 0.99)}, "r1")))
    api_double.roll_out("models", "wine", "wine-00002")
    d = by_service(decisions(send(fn, forecast(TICK0 + 1, {"models/wine": minutes(15, 0.99)}, "r2"))))["models/wine"]
    assert d["revisions"] == ["wine-00002"] and d["applied"]
    assert api_double.annotations("revisions", "models", "wine-00002")[MIN] == "2"


def test_webhook_denials_and_forbidden_calls_skip_the_service(scale_fn):
    rules = [r for r in rbac_rules() if "revisions" not in r.resources]
    double = KubeApiDouble(rules + [r for r in rbac_rules() if "revisions" in r.resources][:0], version="1.21")
    try:
        double.add_service("models", "forbidden", LABEL)
        fn = scale_fn(double)
        data = decisions(send(fn, forecast(TICK0, {"models/forbidden": minutes(15, 0.99)}, "403")))
        assert "403" in data["skipped"][0]["reason"]
    finally:
        double.close()
    double = KubeApiDouble(rbac_rules(), version="1.21")
    try:
        double.add_service("models", "capped", LABEL)
        double.touch("serving.knative.dev", "revisions", "models", "capped-00001", {"autoscaling.knative.dev/max-scale": "1"})
        fn = scale_fn(double)
        data = decisions(send(fn, forecast(TICK0, {"models/capped": minutes(45, 0.99)}, "400")))
        assert data["decisions"] == [] and "400" in data["skipped"][0]["reason"]
        assert "greater than max-scale" in data["skipped"][0]["reason"]
    finally:
        double.close()


def test_malformed_events_get_400_with_a_reason(api_double, scale_fn):
    fn = scale_fn(api_double)
    r = requests.post(fn.url, data=json.dumps({"message": "Hello World"}), timeout=10, headers={
        "ce-specversion": "1.0", "ce-id": "1", "ce-source": "/boson/fn", "ce-type": "boson.fn",
        "content-type": "application/json"})
    assert r.status_code == 400 and "boson.fn" in r.json()["error"]
    bad = forecast(TICK0, {"models/wine": [{"point_rps": "x", "upper_rps": 1, "p_any": 2}]}, "bad")
    r = send(fn, bad)
    assert r.status_code == 400 and "minutes[0]" in r.json()["error"]
    assert api_double.requests == []


def test_state_survives_a_restart(api_double, scale_fn):
    api_double.add_service("models", "wine", LABEL)
    fn = scale_fn(api_double)
    decisions(send(fn, forecast(TICK0, {"models/wine": minutes(15, 0.99)}, "before")))
    fn.stop()
    before = len(api_double.requests)
    fn = scale_fn(api_double)
    d = by_service(decisions(send(fn, forecast(TICK0 + 1, {"models/wine": minutes(15, 0.99)}, "after"))))["models/wine"]
    assert d["previous_min_scale"] == 2 and not d["applied"]
    # a new process reads the Knative version once, then only lists the opted-in services and revisions
    assert [(c.verb, c.resource) for c in api_double.requests[before:] if c.verb != "watch"] == [
        ("get", "namespaces"), ("list", "services"), ("list", "revisions")]
