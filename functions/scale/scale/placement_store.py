"""Placement state in Redis, one key per routing resource (the model's DomainMapping, by UID):
the tier placement decided, since when the forecast has leaned to the other tier (the hysteresis
clock), and the last hour of the model's next-minute forecasts (the placement input). The routing
resource itself is the truth for where the model is routed; this is only what the cluster cannot
say. Written compare-and-set by tick, as the per-service state is (state_store's script), and
expiring with it: a model whose mapping is deleted is forgotten."""

from __future__ import annotations

from typing import cast

import redis

from .pool_plan import ModelState
from .state_store import _CAS_BY_TICK

PREFIX = "scale:placement:"


PlacementState = ModelState
"""The state is pool_plan's (pure): its JSON form is what is stored."""


class PlacementStore:
    def __init__(self, client: redis.Redis, state_ttl_s: int):
        self.redis = client
        self.state_ttl_s = state_ttl_s
        self._cas = client.register_script(_CAS_BY_TICK)

    def load(self, uids: list[str]) -> dict[str, PlacementState]:
        if not uids:
            return {}
        raws = cast("list[bytes | None]", self.redis.mget([PREFIX + u for u in uids]))
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
