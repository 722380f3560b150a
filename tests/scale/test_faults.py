"""The scale function under faults and hostile input (it holds under faults), over real HTTP,
real Redis and the Kubernetes API double enforcing serving/rbac-scale*.yaml. Each test is a
regression test of one way a Service could be scaled wrongly."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import redis

from tests.scale.conftest import LABEL, TICK0, by_service, decisions, forecast, minutes, send
from localmode.kube_api_double import SERVING

MIN = "autoscaling.knative.dev/min-scale"


def _now_minute() -> int:
    return int(time.time() // 60)


def _with(event, **attributes):
    return type(event)(attributes={**event.get_attributes(), **attributes}, data=event.get_data())


def test_a_forged_source_or_an_unmanaged_namespace_is_never_touched(api_double, scale_fn):
    api_double.add_service("models", "wine", LABEL)
    api_double.add_service("tenant-b", "x", LABEL)
    fn = scale_fn(api_double)
    forged = _with(forecast(TICK0, {"tenant-b/x": minutes(50, 0.99)}, "evil"), source="/evil")
    r = send(fn, forged)
    assert r.status_code == 400 and "/evil" in r.json()["error"]
    data = decisions(send(fn, forecast(TICK0, {"tenant-b/x": minutes(50, 0.99), "models/wine": minutes(15, 0.99)}, "ns")))
    assert [d["service"] for d in data["decisions"]] == ["models/wine"]
    assert "namespace not managed" in data["skipped"][0]["reason"]
    assert not [c for c in api_double.requests if c.namespace == "tenant-b"]
    assert MIN not in api_double.annotations("revisions", "tenant-b", "x-00001")


def test_rbac_is_namespaced_even_if_the_function_were_told_otherwise(api_double, scale_fn):
    api_double.add_service("tenant-b", "x", LABEL)
    fn = scale_fn(api_double, MANAGED_NAMESPACES="*")
    data = decisions(send(fn, forecast(TICK0, {"tenant-b/x": minutes(50, 0.99)}, "rbac")))
    assert data["decisions"] == [] and "403" in data["skipped"][0]["reason"]
    assert MIN not in api_double.annotations("revisions", "tenant-b", "x-00001")


def test_a_future_dated_forecast_is_refused_and_freezes_nothing(api_double, scale_fn):
    api_double.add_service("models", "wine", LABEL)
    fn = scale_fn(api_double)
    r = send(fn, forecast(_now_minute() + 30 * 1440, {"models/ghost": minutes(0, 0.0)}, "future"))
    assert r.status_code == 400 and "ahead" in r.json()["error"]
    d = by_service(decisions(send(fn, forecast(_now_minute(), {"models/wine": minutes(15, 0.99)}, "now"))))["models/wine"]
    assert d["applied"] and api_double.annotations("revisions", "models", "wine-00001")[MIN] == "2"


def test_state_from_the_future_left_in_redis_is_not_trusted(api_double, scale_fn, redis_db):
    api_double.add_service("models", "wine", LABEL)
    uid = api_double.get(SERVING[0], "services", "models", "wine")["metadata"]["uid"]
    redis.Redis.from_url(redis_db).set(f"scale:state:{uid}", json.dumps(
        {"tick_s": (_now_minute() + 30 * 1440) * 60, "min_scale": 0, "raised_at_s": None}))
    fn = scale_fn(api_double)
    d = by_service(decisions(send(fn, forecast(_now_minute(), {"models/wine": minutes(15, 0.99)}, "now"))))["models/wine"]
    assert d["applied"] and d["min_scale"] == 2


def test_a_min_scale_someone_else_wrote_is_corrected(api_double, scale_fn):
    api_double.add_service("models", "wine", LABEL)
    fn = scale_fn(api_double)
    decisions(send(fn, forecast(TICK0, {"models/wine": minutes(15, 0.99)}, "1")))
    api_double.touch(SERVING[0], "revisions", "models", "wine-00001", {MIN: "9"})
    d = by_service(decisions(send(fn, forecast(TICK0 + 1, {"models/wine": minutes(15, 0.99)}, "2"))))["models/wine"]
    assert d["previous_min_scale"] == 9 and d["min_scale"] == 2
    assert d["applied"] and api_double.annotations("revisions", "models", "wine-00001")[MIN] == "2"


def test_interleaved_replicas_never_leave_an_older_tick_on_the_revision(api_double, scale_fn, redis_db):
    """Replica A decides tick T+4 while replica B applies T+5 in between A's list and A's patch."""
    api_double.add_service("models", "wine", LABEL)
    uid = api_double.get(SERVING[0], "services", "models", "wine")["metadata"]["uid"]
    client = redis.Redis.from_url(redis_db)
    fn = scale_fn(api_double)

    def replica_b_applies_a_newer_tick() -> None:
        api_double.touch(SERVING[0], "revisions", "models", "wine-00001",
                         {MIN: "3", "predictive-scaling.io/min-scale": "3"})
        client.set(f"scale:state:{uid}", json.dumps({"tick_s": (TICK0 + 5) * 60, "min_scale": 3, "raised_at_s": None}))

    api_double.before_next_patch(replica_b_applies_a_newer_tick)
    data = decisions(send(fn, forecast(TICK0 + 4, {"models/wine": minutes(15, 0.99)}, "a")))
    assert data["decisions"] == [] and "newer forecast" in data["skipped"][0]["reason"]
    assert api_double.annotations("revisions", "models", "wine-00001")[MIN] == "3"
    assert json.loads(client.get(f"scale:state:{uid}"))["tick_s"] == (TICK0 + 5) * 60
    # and a Redis copy that disagrees with the cluster does not stick: the cluster wins
    client.set(f"scale:state:{uid}", json.dumps({"tick_s": (TICK0 + 5) * 60, "min_scale": 0, "raised_at_s": 0}))
    d = by_service(decisions(send(fn, forecast(TICK0 + 6, {"models/wine": minutes(0, 0.0)}, "b"))))["models/wine"]
    assert d["previous_min_scale"] == 3 and d["min_scale"] == 0 and d["applied"]
    assert api_double.annotations("revisions", "models", "wine-00001")[MIN] == "0"


def test_a_service_recreated_under_the_same_name_starts_clean(api_double, scale_fn):
    api_double.add_service("models", "wine", LABEL)
    fn = scale_fn(api_double)
    decisions(send(fn, forecast(TICK0, {"models/wine": minutes(15, 0.99)}, "1")))
    api_double.add_service("models", "wine", LABEL)  # deleted and created again: new UID, bare Revision
    assert MIN not in api_double.annotations("revisions", "models", "wine-00001")
    d = by_service(decisions(send(fn, forecast(TICK0 + 1, {"models/wine": minutes(15, 0.99)}, "2"))))["models/wine"]
    assert d["previous_min_scale"] == 0 and d["applied"]
    assert api_double.annotations("revisions", "models", "wine-00001")[MIN] == "2"


def test_a_revision_that_leaves_traffic_gets_its_own_values_back(api_double, scale_fn):
    api_double.add_service("models", "wine", LABEL, template_annotations={MIN: "0"})
    fn = scale_fn(api_double)
    decisions(send(fn, forecast(TICK0, {"models/wine": minutes(15, 0.99)}, "1")))
    # blue/green: a new Revision takes all traffic, the old one stays reachable by a tag at 0%
    api_double.add_service("models", "wine", LABEL, template_annotations={MIN: "0"},
                           revisions=("wine-00001", "wine-00002"), traffic={"wine-00001": 0, "wine-00002": 100})
    api_double.touch(SERVING[0], "revisions", "models", "wine-00001", {MIN: "2", "predictive-scaling.io/min-scale": "2"})
    d = by_service(decisions(send(fn, forecast(TICK0 + 1, {"models/wine": minutes(15, 0.99)}, "2"))))["models/wine"]
    assert d["revisions"] == ["wine-00002"] and d["released"] == ["wine-00001"]
    old = api_double.annotations("revisions", "models", "wine-00001")
    assert old[MIN] == "0" and "predictive-scaling.io/min-scale" not in old
    assert api_double.annotations("revisions", "models", "wine-00002")[MIN] == "2"


def test_lost_state_holds_a_cooldown_instead_of_lowering(api_double, scale_fn, redis_db):
    api_double.add_service("models", "wine", LABEL)
    fn = scale_fn(api_double, COOLDOWN_SECONDS="300")
    decisions(send(fn, forecast(TICK0, {"models/wine": minutes(15, 0.99)}, "1")))
    client = redis.Redis.from_url(redis_db)
    client.delete(*client.keys("scale:state:*"))  # evicted
    d = by_service(decisions(send(fn, forecast(TICK0 + 1, {"models/wine": minutes(0, 0.0)}, "2"))))["models/wine"]
    assert d["min_scale"] == 2 and "cool-down" in d["reason"]


def test_a_delivery_in_flight_elsewhere_is_retried_not_acknowledged(api_double, scale_fn, redis_db):
    api_double.add_service("models", "wine", LABEL)
    fn = scale_fn(api_double)
    client = redis.Redis.from_url(redis_db)
    client.set("scale:seen:/predictive-scaling/forecast|twice", "pending")
    r = send(fn, forecast(TICK0, {"models/wine": minutes(15, 0.99)}, "twice"))
    assert r.status_code == 503 and r.headers.get("retry-after")
    assert api_double.calls("PATCH") == []
    client.delete("scale:seen:/predictive-scaling/forecast|twice")
    assert send(fn, forecast(TICK0, {"models/wine": minutes(15, 0.99)}, "twice")).status_code == 200
    assert send(fn, forecast(TICK0, {"models/wine": minutes(15, 0.99)}, "twice")).status_code == 202


def test_every_key_it_writes_expires(api_double, scale_fn, redis_db):
    api_double.add_service("models", "wine", LABEL)
    fn = scale_fn(api_double)
    decisions(send(fn, forecast(TICK0, {"models/wine": minutes(15, 0.99)}, "ttl")))
    client = redis.Redis.from_url(redis_db)
    keys = [k for k in client.keys("*") if k != b"scale:latest"]
    assert keys and all(client.ttl(k) > 0 for k in keys), {k: client.ttl(k) for k in keys}
