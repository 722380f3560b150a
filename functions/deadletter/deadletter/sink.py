"""The dead-letter sink: every event the broker gives up on is kept, with why, in Redis.

Knative adds `knativeerrordest`, `knativeerrorcode` and `knativeerrordata` (base64 of the failed
reply) to a dead-lettered event; they are kept with the event's attributes and data, newest
first, in the list DEADLETTER_KEY (capped at DEADLETTER_KEEP). Read them with
`redis-cli LRANGE deadletter:events 0 9`. Redis down is a 503: the broker retries the sink too.

| variable | default | meaning |
|---|---|---|
| REDIS_URL | redis://redis:6379/0 | where dead letters are kept |
| REDIS_PASSWORD | (none) | Redis password (from the Secret `redis-auth` in the cluster install) |
| DEADLETTER_KEY | deadletter:events | the Redis list that holds them, newest first |
| DEADLETTER_KEEP | 10000 | the list is trimmed to this many entries |
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Mapping

import redis
from cloudevents.core.v1.event import CloudEvent

from fncommon import json_log
from fncommon.env_settings import optional, text, whole

log = logging.getLogger("deadletter")


@dataclass(frozen=True)
class SinkSettings:
    redis_url: str
    key: str
    keep: int
    redis_password: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "SinkSettings":
        return cls(text(env, "REDIS_URL", "redis://redis:6379/0"), text(env, "DEADLETTER_KEY", "deadletter:events"),
                   whole(env, "DEADLETTER_KEEP", 10000, positive=True), optional(env, "REDIS_PASSWORD"))


class DeadLetterSink:
    def __init__(self, settings: SinkSettings, client: redis.Redis | None = None):
        self.settings = settings
        self.redis = client or redis.Redis.from_url(settings.redis_url, password=settings.redis_password,
                                                   socket_timeout=5, socket_connect_timeout=2)

    def keep(self, event: CloudEvent) -> int:
        """Store the event; return the HTTP status to answer (202 kept, 503 retry)."""
        attributes = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in event.get_attributes().items()}
        data = event.get_data()
        if isinstance(data, (bytes, bytearray)):
            data = data.decode("utf-8", errors="replace")
        record = {"received": time.time(), "attributes": attributes, "data": data}
        line = json.dumps(record, default=str)
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.lpush(self.settings.key, line)
            pipe.ltrim(self.settings.key, 0, self.settings.keep - 1)
            pipe.execute()
        except redis.RedisError as exc:
            json_log.event(log, "cannot keep dead letter", logging.ERROR, ce_id=event.get_id(), outcome="retry",
                           reason=str(exc))
            return 503
        json_log.event(log, "dead letter kept", logging.WARNING, ce_id=event.get_id(), ce_type=event.get_type(),
                       ce_source=event.get_source(), outcome="kept", error_dest=attributes.get("knativeerrordest"),
                       error_code=attributes.get("knativeerrorcode"))
        return 202

    def close(self) -> None:
        self.redis.close()
