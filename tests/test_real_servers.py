"""The session's real Redis and Prometheus fixtures are the servers themselves, usable by clients."""

from __future__ import annotations

import redis
import requests


def test_redis_fixture_is_a_real_server(redis_server):
    client = redis.Redis.from_url(redis_server.url)
    client.set("k", "v", ex=30)
    assert client.get("k") == b"v"
    assert int(client.info("server")["redis_version"].split(".")[0]) >= 6


def test_prometheus_fixture_is_a_real_server(prometheus_server):
    r = requests.get(f"{prometheus_server.url}/api/v1/query", params={"query": "vector(42)"}, timeout=5)
    assert r.json()["data"]["result"][0]["value"][1] == "42"
    build = requests.get(f"{prometheus_server.url}/api/v1/status/buildinfo", timeout=5).json()["data"]
    assert build["version"]
