"""The dead-letter sink under func-python: keeps every event with Knative's error extensions in
Redis (202), answers 503 (retry) when Redis is down, so nothing the broker gives up on is lost."""

from __future__ import annotations

import json

import redis
import requests
from cloudevents.core.bindings.http import to_binary_event
from cloudevents.core.v1.event import CloudEvent

from localmode.processes import start_redis
from tests.support.functions import start_function


def lettered(event_id: str) -> CloudEvent:
    return CloudEvent(attributes={
        "type": "io.predictive-scaling.forecast.v1", "source": "/test", "id": event_id,
        "datacontenttype": "application/json", "knativeerrordest": "http://scale", "knativeerrorcode": "400",
    }, data={"tick": "yesterday"})


def post(url: str, event: CloudEvent) -> requests.Response:
    message = to_binary_event(event)
    return requests.post(url, data=message.body, headers=message.headers, timeout=10)


def test_keeps_what_it_gets_and_asks_for_a_retry_without_redis(redis_db, tmp_path):
    fn = start_function("deadletter", {"REDIS_URL": redis_db, "DEADLETTER_KEEP": "2"}, tmp_path / "dl.log")
    try:
        for i in range(3):
            assert post(fn.url, lettered(f"e{i}")).status_code == 202
        kept = [json.loads(x) for x in redis.Redis.from_url(redis_db).lrange("deadletter:events", 0, -1)]
        assert [k["attributes"]["id"] for k in kept] == ["e2", "e1"]  # newest first, capped at 2
        assert kept[0]["attributes"]["knativeerrorcode"] == "400" and kept[0]["data"] == {"tick": "yesterday"}
    finally:
        fn.stop()
    own = start_redis(tmp_path / "redis")
    fn = start_function("deadletter", {"REDIS_URL": own.url}, tmp_path / "dl2.log")
    try:
        own.stop()
        r = post(fn.url, lettered("lost?"))
        assert r.status_code == 503 and r.headers.get("retry-after")
    finally:
        fn.stop()
