"""The scale function's watch-fed cache (kube_cache.py through knative_api.py) against the API
double, and the double's watch, 410 Gone and paging as the API server serves them."""

from __future__ import annotations

import json
import time
from typing import Callable

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from localmode.kube_api_double import KubeApiDouble
from scale.knative_api import KnativeApi
from tests.scale.conftest import LABEL, TICK0, decisions, forecast, minutes, rbac_rules, send

SERVING = "serving.knative.dev"
MIN = "autoscaling.knative.dev/min-scale"


def eventually(check: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


@pytest.fixture
def double():
    d = KubeApiDouble(bookmark_interval_s=0.1)
    yield d
    d.close()


def _api(double: KubeApiDouble, **kw) -> KnativeApi:
    return KnativeApi(double.url, retries=2, backoff_s=0.01, **kw)


def _watch(double: KubeApiDouble, **params) -> list[dict]:
    custom = client.CustomObjectsApi(client.ApiClient(client.Configuration(host=double.url)))
    response = custom.list_namespaced_custom_object(SERVING, "v1", "models", params.pop("plural", "services"), watch=True,
                                                    timeout_seconds=1, _preload_content=False, **params)
    return [json.loads(line) for line in iter_resp_lines(response)]


def _lists(double: KubeApiDouble, resource: str) -> int:
    return sum(1 for c in double.requests if c.verb == "list" and c.resource == resource)


# -- the double ------------------------------------------------------------------------------
def test_the_double_streams_added_modified_deleted_and_bookmarks_after_a_resource_version(double):
    double.add_service("models", "a", LABEL)
    rv = double.get(SERVING, "services", "models", "a")["metadata"]["resourceVersion"]
    double.add_service("models", "b", LABEL)
    double.touch(SERVING, "services", "models", "a", {"x": "1"})
    double.delete_object(SERVING, "services", "models", "b")
    double.add_service("models", "theirs", {"team": "x"})  # outside the selector: never seen
    events = _watch(double, resource_version=rv, label_selector="predictive-scaling.io/enabled=true",
                    allow_watch_bookmarks=True)
    seen = [(e["type"], e["object"]["metadata"].get("name")) for e in events]
    assert seen[:3] == [("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]
    assert {t for t, _ in seen[3:]} == {"BOOKMARK"}, seen
    assert int(events[-1]["object"]["metadata"]["resourceVersion"]) >= int(events[2]["object"]["metadata"]["resourceVersion"])
    # a label change takes an object out of a selector's watch (DELETED) and into it (ADDED)
    rv = events[-1]["object"]["metadata"]["resourceVersion"]
    obj = double.get(SERVING, "services", "models", "a")
    obj["metadata"]["labels"] = {}
    double.put_object(SERVING, "services", "models", obj)
    double.put_object(SERVING, "services", "models", {**obj, "metadata": {**obj["metadata"], "labels": dict(LABEL)}})
    events = _watch(double, resource_version=rv, label_selector="predictive-scaling.io/enabled=true")
    assert [e["type"] for e in events] == ["DELETED", "ADDED"]


def test_the_double_answers_a_watch_from_a_compacted_resource_version_with_410_expired(double):
    double.add_service("models", "a", LABEL)
    rv = double.get(SERVING, "services", "models", "a")["metadata"]["resourceVersion"]
    double.touch(SERVING, "services", "models", "a", {"x": "1"})
    double.compact()
    (event,) = _watch(double, resource_version=rv)
    assert event["type"] == "ERROR" and event["object"]["code"] == 410 and event["object"]["reason"] == "Expired"
    assert "too old resource version" in event["object"]["message"]
    # a bounded history drops the oldest events itself, as the watch cache's capacity does
    small = KubeApiDouble(watch_history=3)
    try:
        small.add_service("models", "a", LABEL)  # 3 events: Service, Revision, PodAutoscaler
        rv = small.get(SERVING, "services", "models", "a")["metadata"]["resourceVersion"]
        small.add_service("models", "b", LABEL)
        (event,) = _watch(small, resource_version=rv)
        assert event["object"]["code"] == 410
    finally:
        small.close()


def test_the_double_pages_a_consistent_snapshot_and_expires_old_continue_tokens(double):
    for i in range(5):
        double.add_service("models", f"s{i}", LABEL)
    custom = client.CustomObjectsApi(client.ApiClient(client.Configuration(host=double.url)))
    first = custom.list_namespaced_custom_object(SERVING, "v1", "models", "revisions", limit=2)
    assert [o["metadata"]["name"] for o in first["items"]] == ["s0-00001", "s1-00001"]
    assert first["metadata"]["remainingItemCount"] == 3 and first["metadata"]["continue"]
    double.touch(SERVING, "revisions", "models", "s3-00001", {"x": "changed after the first page"})
    double.add_service("models", "s9", LABEL)
    second = custom.list_namespaced_custom_object(SERVING, "v1", "models", "revisions", limit=2,
                                                  _continue=first["metadata"]["continue"])
    names = [o["metadata"]["name"] for o in second["items"]]
    assert names == ["s2-00001", "s3-00001"]
    assert "x" not in second["items"][1]["metadata"]["annotations"]  # the snapshot, not the change
    assert second["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    third = custom.list_namespaced_custom_object(SERVING, "v1", "models", "revisions", limit=2,
                                                 _continue=second["metadata"]["continue"])
    assert [o["metadata"]["name"] for o in third["items"]] == ["s4-00001"] and not third["metadata"].get("continue")
    double.compact()
    with pytest.raises(ApiException) as gone:
        custom.list_namespaced_custom_object(SERVING, "v1", "models", "revisions", limit=2,
                                             _continue=second["metadata"]["continue"])
    assert gone.value.status == 410


# -- the cache -------------------------------------------------------------------------------
def test_the_cache_lists_once_then_follows_the_watch(double):
    double.add_service("models", "a", LABEL)
    api = _api(double)
    try:
        assert [s["metadata"]["name"] for s in api.list_services("models", ("predictive-scaling.io/enabled", "true"))] == ["a"]
        assert len(api.list_targets("models", False)) == 1
        double.add_service("models", "b", LABEL)
        double.touch(SERVING, "revisions", "models", "a-00001", {MIN: "3"})
        double.delete_object(SERVING, "revisions", "models", "b-00001")

        def current() -> bool:
            names = {s["metadata"]["name"] for s in api.list_services("models", ("predictive-scaling.io/enabled", "true"))}
            targets = {t["metadata"]["name"]: t for t in api.list_targets("models", False)}
            return names == {"a", "b"} and set(targets) == {"a-00001"} and \
                targets["a-00001"]["metadata"]["annotations"].get(MIN) == "3"

        assert eventually(current)
        assert _lists(double, "services") == 1 and _lists(double, "revisions") == 1  # no list after the first
        assert any(c.verb == "watch" and c.resource == "revisions" for c in double.requests)
    finally:
        api.close()


def test_a_410_gone_on_the_watch_lists_again():
    double = KubeApiDouble(bookmark_interval_s=60)  # no bookmark moves the cache's resourceVersion past the gap
    double.add_service("models", "a", LABEL)
    api = _api(double)
    try:
        api.list_targets("models", False)
        assert eventually(lambda: any(c.verb == "watch" for c in double.requests))
        informer = api.cache.informer(SERVING, "v1", "models", "revisions")
        double.drop_events(lambda key: key[1] == "revisions")  # the cache will not hear of this one
        double.touch(SERVING, "revisions", "models", "a-00001", {MIN: "4"})
        double.compact()  # the watch ends; re-opened from the cache's resourceVersion, it gets 410
        assert eventually(lambda: informer.expired >= 1 and _lists(double, "revisions") >= 2)
        assert eventually(lambda: api.list_targets("models", False)[0]["metadata"]["annotations"].get(MIN) == "4")
        assert [c.status for c in double.requests if c.verb == "watch"][:2] == [200, 200]
    finally:
        api.close()
        double.close()


def test_a_missed_event_is_corrected_by_the_next_list(double):
    double.add_service("models", "a", LABEL)
    api = _api(double, relist_s=1.5)
    try:
        api.list_targets("models", False)
        double.drop_events(lambda key: key[1] == "revisions")
        double.touch(SERVING, "revisions", "models", "a-00001", {MIN: "5"})
        double.touch(SERVING, "services", "models", "a", {"seen": "yes"})  # delivered: the watch is alive
        assert eventually(lambda: api.list_services("models", ("predictive-scaling.io/enabled", "true"))[0]
                          ["metadata"]["annotations"].get("seen") == "yes")
        assert api.list_targets("models", False)[0]["metadata"]["annotations"].get(MIN) is None  # missed
        assert eventually(lambda: api.list_targets("models", False)[0]["metadata"]["annotations"].get(MIN) == "5")
        assert _lists(double, "revisions") >= 2
    finally:
        api.close()


def test_a_write_from_a_stale_cache_gets_409_and_is_resolved_on_the_live_object(double):
    double.add_service("models", "a", LABEL)
    api = _api(double)
    try:
        (target,) = api.list_targets("models", False)
        double.drop_events(lambda key: key[1] == "revisions")  # someone else's write the cache misses
        double.touch(SERVING, "revisions", "models", "a-00001", {"team": "x"})
        (stale,) = api.list_targets("models", False)
        assert stale["metadata"]["resourceVersion"] == target["metadata"]["resourceVersion"]
        written = api.patch_annotations("models", "a-00001", {MIN: "2"}, stale["metadata"]["resourceVersion"], False)
        patches = [c.status for c in double.requests if c.method == "PATCH"]
        assert patches == [409, 200]
        assert [c.verb for c in double.requests if c.name == "a-00001"][-2:] == ["get", "patch"]
        live = double.annotations("revisions", "models", "a-00001")
        assert live[MIN] == "2" and live["team"] == "x" and written["metadata"]["annotations"][MIN] == "2"
        # our write's answer is in the cache at once, ahead of its watch event
        (cached,) = api.list_targets("models", False)
        assert cached["metadata"]["annotations"][MIN] == "2"
    finally:
        api.close()


def test_paged_lists_and_a_restart_after_an_expired_continue_token(double):
    for i in range(5):
        double.add_service("models", f"s{i}", LABEL)
    api = _api(double, reads="list", page_size=2)
    try:
        assert len(api.list_targets("models", False)) == 5
        assert _lists(double, "revisions") == 3  # 2 + 2 + 1
        double.fail(lambda r: r.verb == "list" and bool(r.query.get("continue")), 410)
        assert sorted(t["metadata"]["name"] for t in api.list_targets("models", False)) == [f"s{i}-00001" for i in range(5)]
        statuses = [c.status for c in double.requests if c.verb == "list"][3:]
        assert statuses == [200, 410, 200, 200, 200]  # expired mid-way: the list starts over
        assert api.cache is None and not any(c.verb == "watch" for c in double.requests)
    finally:
        api.close()


def test_without_the_watch_verb_every_read_is_a_fresh_paged_list():
    rules = [r for r in rbac_rules()]
    for rule in rules:
        rule.verbs = [v for v in rule.verbs if v != "watch"]
    double = KubeApiDouble(rules)
    api = _api(double)
    try:
        double.add_service("models", "a", LABEL)
        api.list_targets("models", False)
        assert eventually(lambda: any(c.verb == "watch" and c.status == 403 for c in double.requests))
        double.touch(SERVING, "revisions", "models", "a-00001", {MIN: "6"})
        assert eventually(lambda: api.list_targets("models", False)[0]["metadata"]["annotations"].get(MIN) == "6")
        assert _lists(double, "revisions") >= 2
    finally:
        api.close()
        double.close()


def test_the_function_stops_its_watches_when_it_stops(scale_fn, api_double):
    api_double.add_service("models", "wine", LABEL)
    fn = scale_fn(api_double)
    decisions(send(fn, forecast(TICK0, {"models/wine": minutes(15, 0.99)}, "w1")))
    assert eventually(lambda: len(api_double._watching) == 2)  # Services and Revisions of "models"
    fn.stop()
    assert eventually(lambda: api_double._watching == {})  # none left open behind the function
