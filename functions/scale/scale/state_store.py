"""What the scale function remembers, in Redis: events claimed, per-service state, decisions.

The cluster is the truth for what a Revision carries (it is listed every event); Redis keeps
only what the cluster cannot say: the tick of the last forecast applied (older ones are out of
order) and when min-scale was last raised (the cool-down clock). State is keyed by the Knative
Service's UID, so a Service deleted and recreated under the same name starts clean, and it is
written compare-and-set by tick (a Lua script), so two replicas interleaving can never put an
older tick's state over a newer one. Every key expires (STATE_TTL_SECONDS, refreshed on each
write): services that disappear are forgotten, and Redis memory is bounded by design.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import redis

SEEN_PREFIX = "scale:seen:"
STATE_PREFIX = "scale:state:"
LATEST_KEY = "scale:latest"
LOG_PREFIX = "scale:log:"
PENDING, DONE = b"pending", b"done"

# Set the state unless the stored one is from a newer tick (and that tick is not from the future).
_CAS_BY_TICK = """
local current = redis.call('GET', KEYS[1])
if current then
  local ok, stored = pcall(cjson.decode, current)
  if ok and type(stored) == 'table' and stored['tick_s'] then
    local tick = tonumber(stored['tick_s'])
    if tick > tonumber(ARGV[2]) and tick <= tonumber(ARGV[3]) then return 0 end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[4])
return 1
"""


@dataclass
class ServiceState:
    tick_s: float
    min_scale: int
    raised_at_s: float | None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes) -> "ServiceState | None":
        try:
            data = json.loads(raw)
            return cls(float(data["tick_s"]), int(data["min_scale"]),
                       None if data.get("raised_at_s") is None else float(data["raised_at_s"]))
        except (ValueError, KeyError, TypeError):
            return None  # unreadable: as if evicted (the caller then holds for a cool-down)


class StateStore:
    def __init__(self, client: redis.Redis, ttl_s: int, history: int, state_ttl_s: int = 7 * 86400,
                 claim_ttl_s: int = 120):
        self.redis = client
        self.ttl_s = ttl_s
        self.history = history
        self.state_ttl_s = state_ttl_s
        self.claim_ttl_s = claim_ttl_s
        self._cas = client.register_script(_CAS_BY_TICK)

    def claim(self, source: str, event_id: str) -> bool | None:
        """Take the event atomically: True to handle it, False if it was handled, None if
        another delivery of it is being handled right now (answer retry, never duplicate)."""
        key = f"{SEEN_PREFIX}{source}|{event_id}"
        if self.redis.set(key, PENDING, nx=True, ex=self.claim_ttl_s):
            return True
        return None if self.redis.get(key) == PENDING else False

    def done(self, source: str, event_id: str) -> None:
        self.redis.set(f"{SEEN_PREFIX}{source}|{event_id}", DONE, ex=self.ttl_s)

    def release(self, source: str, event_id: str) -> None:
        try:
            self.redis.delete(f"{SEEN_PREFIX}{source}|{event_id}")
        except redis.RedisError:
            pass  # the claim expires by itself

    def load(self, uids: list[str]) -> dict[str, ServiceState]:
        if not uids:
            return {}
        raws = self.redis.mget([STATE_PREFIX + u for u in uids])
        states = {u: ServiceState.from_json(r) for u, r in zip(uids, raws) if r}
        return {u: s for u, s in states.items() if s is not None}

    def save(self, states: dict[str, ServiceState], decisions: list[dict], trust_until_s: float) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for uid, state in states.items():
            self._cas(keys=[STATE_PREFIX + uid], args=[state.to_json(), state.tick_s, trust_until_s, self.state_ttl_s],
                      client=pipe)
        for decision in decisions:
            line = json.dumps(decision)
            pipe.hset(LATEST_KEY, decision["service"], line)
            pipe.lpush(LOG_PREFIX + decision["service"], line)
            pipe.ltrim(LOG_PREFIX + decision["service"], 0, self.history - 1)
            pipe.expire(LOG_PREFIX + decision["service"], self.state_ttl_s)
        pipe.execute()

    def close(self) -> None:
        self.redis.close()
