"""What the scale function keeps in Redis per event (state_store.py), against a real Redis: each
decision line is sent once and lands both in the latest-decision hash and on the service's
bounded log, which expires with the state."""

from __future__ import annotations

import orjson
import redis

from scale.state_store import BATCH, LATEST_KEY, LOG_PREFIX, STATE_PREFIX, ServiceState, StateStore


def decision(service: str, tick: str, min_scale: int) -> dict:
    return {"tick": tick, "service": service, "min_scale": min_scale, "reason": "a \"quoted\" reason\twith a tab"}


def test_each_decision_line_goes_to_the_hash_and_the_log_once(redis_db):
    client = redis.Redis.from_url(redis_db)
    store = StateStore(client, ttl_s=60, history=3, state_ttl_s=600)
    services = [f"ns-{k % 3}/svc-{k:04d}" for k in range(BATCH + 7)]  # two script calls
    for minute in range(5):
        tick = f"2026-12-07T10:{minute:02d}:00Z"
        store.save({s: ServiceState(600.0 + 60 * minute, minute, None) for s in services},
                   [decision(s, tick, minute) for s in services], trust_until_s=10_000.0)
    latest = client.hgetall(LATEST_KEY)
    assert sorted(latest) == sorted(s.encode() for s in services)
    for service in (services[0], services[BATCH], services[-1]):
        assert orjson.loads(latest[service.encode()]) == decision(service, "2026-12-07T10:04:00Z", 4)
        log = [orjson.loads(line) for line in client.lrange(LOG_PREFIX + service, 0, -1)]
        assert [d["min_scale"] for d in log] == [4, 3, 2]  # newest first, `history` kept
        assert 0 < client.ttl(LOG_PREFIX + service) <= 600
        assert orjson.loads(client.get(STATE_PREFIX + service))["min_scale"] == 4


def test_a_batch_whose_lines_and_keys_disagree_is_refused(redis_db):
    client = redis.Redis.from_url(redis_db)
    store = StateStore(client, ttl_s=60, history=3)
    try:
        store._save_decisions(keys=[LATEST_KEY, LOG_PREFIX + "ns/a", LOG_PREFIX + "ns/b"], args=[2, 60, len(LOG_PREFIX), b"{}"])
    except redis.ResponseError as exc:
        assert "one line per log key" in str(exc)
    else:
        raise AssertionError("a batch with fewer lines than logs was written")
    assert client.hget(LATEST_KEY, "ns/b") is None and not client.exists(LOG_PREFIX + "ns/b")
