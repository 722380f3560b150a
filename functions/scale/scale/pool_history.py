"""The pool plan's memory in Redis: each model's minute history (requests observed, as the
forecast event's `observed` block reports them, the forecast P(any request in the minutes a
decision covers) made at each tick, and that forecast's (point, upper) load, which prices the
pods a forecast candidate's sizing holds) and each tier's warmth state (the candidate in force, when it
was chosen, the keep-alive's clock).

Bounded by design: one hash per model and kind, one field per minute, the fields older than
POOL_HISTORY_MINUTES deleted as new ones come (a week: 10,080 fields of a few bytes), and every
key expiring with the rest of the state (STATE_TTL_SECONDS). The history is read only when a
warmth choice is due (pool_plan.choice_due: once a day by default)."""

from __future__ import annotations

from typing import Mapping, Sequence, cast

import redis

from .pool_plan import TierState

COUNTS = "scale:hist:c:"
P_ANY = "scale:hist:p:"
SIZE = "scale:hist:u:"
TIER = "scale:pool:tier:"
TRIM_BACK = 15
"""Fields this many minutes beyond the bound are deleted each tick (missed ticks leave none)."""


class PoolHistoryStore:
    def __init__(self, client: redis.Redis, history_minutes: int, ttl_s: int):
        self.redis = client
        self.minutes = history_minutes
        self.ttl_s = ttl_s

    def record(self, namespace: str, minute: int, p_any: Mapping[str, float | None],
               observed: Mapping[str, tuple[int, Sequence[float | None]]],
               sizes: Mapping[str, tuple[float, float] | None] | None = None) -> None:
        """`sizes[model]`: (point, upper) req/s of its forecast (pool_plan.covered_size)."""
        sizes = sizes or {}
        pipe = self.redis.pipeline(transaction=False)
        old = [str(m) for m in range(minute - self.minutes - TRIM_BACK, minute - self.minutes)]
        for model in set(p_any) | set(observed):
            key = f"{namespace}/{model}"
            p = p_any.get(model)
            if p is not None:
                pipe.hset(P_ANY + key, str(minute), f"{p:.4f}")
            size = sizes.get(model)
            if size is not None:
                pipe.hset(SIZE + key, str(minute), f"{size[0]:.6g},{size[1]:.6g}")
            seen = observed.get(model)
            if seen:
                start, counts = seen
                fields = {str(start + i): f"{c:g}" for i, c in enumerate(counts) if c is not None}
                if fields:
                    pipe.hset(COUNTS + key, mapping=fields)
            for prefix in (COUNTS, P_ANY, SIZE):
                pipe.hdel(prefix + key, *old)
                pipe.expire(prefix + key, self.ttl_s)
        pipe.execute()

    def load_models(self, namespace: str, models: Sequence[str]) -> tuple[
            dict[str, dict[int, float]], dict[str, dict[int, float]], dict[str, dict[int, tuple[float, float]]]]:
        pipe = self.redis.pipeline(transaction=False)
        for model in models:
            pipe.hgetall(COUNTS + f"{namespace}/{model}")
            pipe.hgetall(P_ANY + f"{namespace}/{model}")
            pipe.hgetall(SIZE + f"{namespace}/{model}")
        raws = pipe.execute()
        counts, p_any, sizes = {}, {}, {}
        for i, model in enumerate(models):
            counts[model] = _numbers(raws[3 * i])
            p_any[model] = _numbers(raws[3 * i + 1])
            sizes[model] = _pairs(raws[3 * i + 2])
        return counts, p_any, sizes

    def load_tiers(self, namespace: str, names: Sequence[str]) -> dict[str, TierState]:
        raws = cast("list[bytes | None]", self.redis.mget([TIER + f"{namespace}/{n}" for n in names])) if names else []
        return {n: TierState.from_json(r) if r else TierState() for n, r in zip(names, raws)}

    def save_tiers(self, namespace: str, states: Mapping[str, TierState]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for name, state in states.items():
            pipe.set(TIER + f"{namespace}/{name}", state.to_json(), ex=self.ttl_s)
        pipe.execute()


def _numbers(raw: Mapping[bytes, bytes]) -> dict[int, float]:
    out = {}
    for k, v in (raw or {}).items():
        try:
            out[int(k)] = float(v)
        except ValueError:
            continue  # an unreadable field is a minute not observed
    return out


def _pairs(raw: Mapping[bytes, bytes]) -> dict[int, tuple[float, float]]:
    out = {}
    for k, v in (raw or {}).items():
        try:
            point, upper = (float(x) for x in v.split(b","))
            out[int(k)] = (point, upper)
        except ValueError:
            continue  # unreadable: that minute's sizing unknown
    return out
