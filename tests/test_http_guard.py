"""What a request may make a CloudEvents function hold, checked on the real functions under
func-python over real HTTP: an oversized body is refused before it is buffered whole, and JSON
nested too deeply is a 400 (dead-lettered), not a 500 (retried)."""

from __future__ import annotations

import json

import pytest
import requests

from tests.support.functions import start_function
from tests.support.servers import ROOT

FUNCTIONS = ("forecast", "scale", "deadletter")


@pytest.fixture(params=FUNCTIONS)
def fn(request, redis_db, tmp_path):
    running = start_function(request.param, {"REDIS_URL": redis_db, "KUBERNETES_API_URL": "http://127.0.0.1:9",
                                             "PROMETHEUS_URL": "http://127.0.0.1:9", "FORECASTER_ROOT": str(tmp_path),
                                             "MAX_EVENT_BYTES": str(1024 * 1024)},
                             tmp_path / "fn.log", wait_ready=False)
    yield running
    running.stop()


def _headers(kind: str) -> dict[str, str]:
    return {"ce-specversion": "1.0", "ce-id": "x", "ce-source": "/predictive-scaling/forecast",
            "ce-type": kind, "content-type": "application/json"}


def test_a_body_over_the_limit_is_refused_with_a_reason(fn):
    body = b'{"pad": "' + b"x" * (48 * 1024 * 1024) + b'"}'
    try:
        r = requests.post(fn.url, data=body, headers=_headers("io.predictive-scaling.forecast.v1"), timeout=60)
    except requests.ConnectionError:
        pytest.fail("the server dropped the connection instead of answering 400")
    assert r.status_code == 400 and "over the limit" in r.json()["error"]
    # and one that streams (no Content-Length) is cut off at the limit too
    chunks = (b"[" * 4096 for _ in range(1024))
    r = requests.post(fn.url, data=chunks, headers=_headers("io.predictive-scaling.forecast.v1"), timeout=60)
    assert r.status_code == 400 and "over the limit" in r.json()["error"]


@pytest.mark.parametrize("depth", [100, 100_000])
def test_deeply_nested_json_is_a_400(fn, depth):
    body = ("[" * depth + "]" * depth).encode()
    r = requests.post(fn.url, data=body, headers=_headers("io.predictive-scaling.forecast.v1"), timeout=30)
    assert r.status_code == 400 and "nested deeper" in r.json()["error"]
    structured = json.dumps({"specversion": "1.0", "id": "y", "source": "/s", "type": "t",
                             "datacontenttype": "application/json", "data": {"a": 1}}).encode()
    deep = structured.replace(b'{"a": 1}', b"[" * depth + b"]" * depth)
    r = requests.post(fn.url, data=deep, headers={"content-type": "application/cloudevents+json"}, timeout=30)
    assert r.status_code == 400 and "nested deeper" in r.json()["error"]
