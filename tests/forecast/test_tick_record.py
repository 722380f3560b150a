"""What a tick records in Redis (one script call per batch, each line sent once) is, per
service, the line the reply's entry encodes to: in the latest-forecast hash and at the head of
its bounded log, with the log's TTL. Against a real Redis."""

from __future__ import annotations

import orjson
import redis

from forecast import tick
from forecast.settings import ForecastSettings
from forecast.tick import LATEST_KEY, LOG_PREFIX, RECORD_BATCH, TickHandler


def entries(n: int, round_: int) -> list[dict]:
    out: list[dict] = []
    for i in range(n):
        name = f"ns/svc-{i}" if i % 7 else f"ns/café-{i}"  # multi-byte names and lines
        if i % 3:
            out.append({"service": name, "status": "ok", "minutes": [
                {"start": "2024-11-22T12:00:00Z", "point_rps": i / 7 + round_, "upper_rps": i / 3, "p_any": 0.5}]})
        else:
            out.append({"service": name, "status": "no-data", "reason": f"stale: \"ünknown\" {round_}"})
    return out


def test_each_service_s_line_lands_in_the_hash_and_its_bounded_log(redis_db, tmp_path):
    client = redis.Redis.from_url(redis_db)
    settings = ForecastSettings.from_env({"REDIS_URL": redis_db, "FORECASTER_ROOT": str(tmp_path),
                                          "FORECAST_HISTORY": "3"})
    handler = TickHandler(settings, client)
    n = 2 * RECORD_BATCH + 17  # two full batches and a partial one
    sent = []
    for round_ in range(5):
        data = {"tick": f"2024-11-22T12:0{round_}:00Z", "model": {"version": "v1"}, "services": entries(n, round_)}
        handler._record(data)
        sent.append([orjson.dumps({"tick": data["tick"], "model": "v1", **e}) for e in data["services"]])
    latest = client.hgetall(LATEST_KEY)
    assert len(latest) == n
    for i, entry in enumerate(entries(n, 4)):
        key = entry["service"]
        assert latest[key.encode()] == sent[4][i]
        assert client.lrange(LOG_PREFIX + key, 0, -1) == [sent[r][i] for r in (4, 3, 2)]  # newest first, 3 kept
        assert 0 < client.ttl(LOG_PREFIX + key) <= tick.LOG_TTL_S
    assert orjson.loads(latest["ns/café-0".encode()])["reason"] == "stale: \"ünknown\" 4"


def test_evicted_services_leave_the_hash(redis_db, tmp_path):
    client = redis.Redis.from_url(redis_db)
    handler = TickHandler(ForecastSettings.from_env({"REDIS_URL": redis_db, "FORECASTER_ROOT": str(tmp_path)}), client)
    handler._record({"tick": "t", "model": {}, "services": entries(4, 0)})
    handler.cache.evicted = ["ns/svc-1"]
    handler._record({"tick": "t", "model": {}, "services": entries(4, 0)[2:]})
    assert sorted(client.hkeys(LATEST_KEY)) == [b"ns/caf\xc3\xa9-0", b"ns/svc-2", b"ns/svc-3"]
