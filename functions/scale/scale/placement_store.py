"""Placement state in Redis, one key per routing resource (the model's DomainMapping, by UID):
the tier placement decided, since when the forecast has leaned to the other tier (the hysteresis
clock), and the last hour of the model's next-minute forecasts (the placement input). The routing
resource itself is the truth for where the model is routed; this is only what the cluster cannot
say. Written compare-and-set by tick, as the per-service state is (state_store's script), and
expiring with it: a model whose mapping is deleted is forgotten."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import redis

from .placement import DEDICATED, POOL
from .state_store import _CAS_BY_TICK

PREFIX = "scale:placement:"


@dataclass
class PlacementState:
    tick_s: float
    tier: str
    leaning_since: float | None = None
    samples: list[tuple[float, float]] = field(default_factory=list)
    """(tick_s, next-minute point forecast in req/s) for the last hour."""

    def to_json(self) -> str:
        return json.dumps({"tick_s": self.tick_s, "tier": self.tier, "leaning_since": self.leaning_since,
                           "samples": [[t, round(v, 6)] for t, v in self.samples]})

    @classmethod
    def from_json(cls, raw: bytes) -> "PlacementState | None":
        try:
            data = json.loads(raw)
            tier = data["tier"]
            if tier not in (POOL, DEDICATED):
                return None
            samples = [(float(t), float(v)) for t, v in data.get("samples") or []]
            since = data.get("leaning_since")
            state = cls(float(data["tick_s"]), tier, None if since is None else float(since), samples)
        except (ValueError, KeyError, TypeError):
            return None  # unreadable: as if evicted (placement restarts from where the route points)
        return state if all(math.isfinite(v) for _, v in state.samples) else None


class PlacementStore:
    def __init__(self, client: redis.Redis, state_ttl_s: int):
        self.redis = client
        self.state_ttl_s = state_ttl_s
        self._cas = client.register_script(_CAS_BY_TICK)

    def load(self, uids: list[str]) -> dict[str, PlacementState]:
        if not uids:
            return {}
        raws = self.redis.mget([PREFIX + u for u in uids])
        states = {u: PlacementState.from_json(r) for u, r in zip(uids, raws) if r}
        return {u: s for u, s in states.items() if s is not None}

    def save(self, states: dict[str, PlacementState], trust_until_s: float) -> None:
        if not states:
            return
        pipe = self.redis.pipeline(transaction=False)
        for uid, state in states.items():
            self._cas(keys=[PREFIX + uid], args=[state.to_json(), state.tick_s, trust_until_s, self.state_ttl_s],
                      client=pipe)
        pipe.execute()
