"""What the scale function remembers, in Redis: events seen, per-service state, decisions.

The per-service state is what lets a decision cost no API call when nothing changes: the
min-scale and window last written on each routed Revision (and its resourceVersion), the tick
of the last forecast applied (older ones are out of order), and when min-scale was last raised
(the cool-down clock). A restarted function instance picks it up as it was.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import redis

SEEN_PREFIX = "scale:seen:"
STATE_PREFIX = "scale:state:"
LATEST_KEY = "scale:latest"
LOG_PREFIX = "scale:log:"


@dataclass
class RevisionState:
    min_scale: str | None
    window: str | None
    resource_version: str | None


@dataclass
class ServiceState:
    tick_s: float
    min_scale: int
    raised_at_s: float | None
    revisions: dict[str, RevisionState] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes) -> "ServiceState":
        data = json.loads(raw)
        revisions = {k: RevisionState(**v) for k, v in data.pop("revisions", {}).items()}
        return cls(**data, revisions=revisions)


class StateStore:
    def __init__(self, client: redis.Redis, ttl_s: int, history: int):
        self.redis = client
        self.ttl_s = ttl_s
        self.history = history

    def seen(self, source: str, event_id: str) -> bool:
        return bool(self.redis.exists(f"{SEEN_PREFIX}{source}|{event_id}"))

    def mark_seen(self, source: str, event_id: str) -> None:
        self.redis.set(f"{SEEN_PREFIX}{source}|{event_id}", 1, ex=self.ttl_s)

    def load(self, services: list[str]) -> dict[str, ServiceState]:
        if not services:
            return {}
        raws = self.redis.mget([STATE_PREFIX + s for s in services])
        return {s: ServiceState.from_json(r) for s, r in zip(services, raws) if r}

    def save(self, states: dict[str, ServiceState], decisions: list[dict]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for service, state in states.items():
            pipe.set(STATE_PREFIX + service, state.to_json())
        for decision in decisions:
            line = json.dumps(decision)
            pipe.hset(LATEST_KEY, decision["service"], line)
            pipe.lpush(LOG_PREFIX + decision["service"], line)
            pipe.ltrim(LOG_PREFIX + decision["service"], 0, self.history - 1)
        pipe.execute()
