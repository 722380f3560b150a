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

from dataclasses import dataclass
from typing import cast

import orjson
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

# The same compare-and-set for a batch of services in one call: KEYS are state keys, ARGV is
# trust_until, ttl, and one JSON array of [state JSON, tick] per key (one argument: packing 20,000
# arguments costs the client more than Redis spends on the script). 10,000 services: 20 calls.
_CAS_BY_TICK_BATCH = """
local trust, ttl = tonumber(ARGV[1]), ARGV[2]
local batch = cjson.decode(ARGV[3])
local written = 0
for i, key in ipairs(KEYS) do
  local value, tick = batch[i][1], tonumber(batch[i][2])
  local keep = false
  local current = redis.call('GET', key)
  if current then
    local ok, stored = pcall(cjson.decode, current)
    if ok and type(stored) == 'table' and tonumber(stored['tick_s']) then
      local stored_tick = tonumber(stored['tick_s'])
      keep = stored_tick > tick and stored_tick <= trust
    end
  end
  if not keep then
    redis.call('SET', key, value, 'EX', ttl)
    written = written + 1
  end
end
return written
"""

# Each decision line once: into the latest-decision hash (field: the service, the log key after
# its prefix) and onto that service's bounded log. KEYS[1] is the hash, KEYS[2..] the logs; ARGV
# is entries kept - 1, the TTL, the prefix length, and the lines joined by newlines in the order
# of the logs (one argument: a JSON line has no raw newline, and 500 lines as 500 arguments cost
# the client more to pack than Redis spends splitting them).
_SAVE_DECISIONS = """
local last, ttl, skip, text = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), ARGV[4]
local at = 1
for i = 2, #KEYS do
  local stop = string.find(text, '\\n', at, true)
  if (stop == nil) ~= (i == #KEYS) then return redis.error_reply('one line per log key expected') end
  local line = string.sub(text, at, (stop or #text + 1) - 1)
  redis.call('HSET', KEYS[1], string.sub(KEYS[i], skip + 1), line)
  redis.call('LPUSH', KEYS[i], line)
  redis.call('LTRIM', KEYS[i], 0, last)
  redis.call('EXPIRE', KEYS[i], ttl)
  if stop then at = stop + 1 end
end
return #KEYS - 1
"""

BATCH = 500
"""Services per script call: bounded work per call, so Redis never blocks long on one."""


@dataclass
class ServiceState:
    tick_s: float
    min_scale: int
    raised_at_s: float | None

    def to_json(self) -> str:
        return orjson.dumps({"tick_s": self.tick_s, "min_scale": self.min_scale, "raised_at_s": self.raised_at_s}).decode()

    @classmethod
    def from_json(cls, raw: bytes) -> "ServiceState | None":
        try:
            data = orjson.loads(raw)
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
        self._cas_batch = client.register_script(_CAS_BY_TICK_BATCH)
        self._save_decisions = client.register_script(_SAVE_DECISIONS)

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
        raws = cast("list[bytes | None]", self.redis.mget([STATE_PREFIX + u for u in uids]))
        states = {u: ServiceState.from_json(r) for u, r in zip(uids, raws) if r}
        return {u: s for u, s in states.items() if s is not None}

    def save(self, states: dict[str, ServiceState], decisions: list[dict], trust_until_s: float) -> None:
        """Every state (compare-and-set by tick) and decision line (sent once: the script puts it
        in the latest-decision hash and on the service's log), in batches of BATCH services per
        script call, all in one pipeline round trip."""
        pipe = self.redis.pipeline(transaction=False)
        items = list(states.items())
        for at in range(0, len(items), BATCH):
            chunk = items[at:at + BATCH]
            batch = orjson.dumps([[state.to_json(), state.tick_s] for _, state in chunk])
            self._cas_batch(keys=[STATE_PREFIX + uid for uid, _ in chunk], args=[trust_until_s, self.state_ttl_s, batch],
                            client=pipe)
        for at in range(0, len(decisions), BATCH):
            rows = decisions[at:at + BATCH]
            self._save_decisions(keys=[LATEST_KEY, *(LOG_PREFIX + d["service"] for d in rows)],
                                 args=[self.history - 1, self.state_ttl_s, len(LOG_PREFIX),
                                       b"\n".join(orjson.dumps(d) for d in rows)],
                                 client=pipe)
        pipe.execute()

    def close(self) -> None:
        self.redis.close()
