"""Many Knative Services at once, second by second, vectorised over "lanes" (one lane = one
Service under one policy setting), for fleets too large for training/simulator.py's loop.

The model is training/simulator.py's (the single-trace backtest keeps using that one; a test
runs both on the same trace and compares): pods have a capacity in req/s and are ready
`cold_start_s` after they start; Knative's KPA decides every 2 s with the rules of
training/kpa_model.py, here in numpy over all lanes at once (`kpa_tick_lanes`, checked against
`kpa_tick` rule by rule in a test); while no pod is ready the activator buffers requests and pokes
the autoscaler at once; min-scale comes from a schedule set once a minute, `actuation_delay_s`
into the minute (raising it starts pods at once, as the scale function's warm-up request does).
Every controller the fleet backtest scores decides from counts and forecasts, never from the
simulated pods, so its whole schedule is known before the run, except the fleet budget's price,
which a callback may rewrite for the minutes still ahead (it is fed back once an hour).

Scored per request: cold (arrived while no pod of its Service was ready) and over capacity
(arrived while pods were ready but not served within its arrival second); per second: pods
existing (pending or ready) as pod-seconds, and wasted pod-seconds (pods beyond
ceil(requests served that second / capacity): capacity no request used).
The per-second ready count of chosen lanes is kept for the pool's per-model scores
(`PoolModelCache`: model loads and LRU evictions per pod).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from training.kpa_model import KpaConfig, KpaState, kpa_tick, panic_window_s

DAY_S = 86_400


@dataclass(frozen=True)
class FleetSimConfig:
    capacity_rps: float = 10.0
    cold_start_s: int = 5
    actuation_delay_s: int = 2
    max_scale: int = 0
    """Knative's max-scale for every Service (0: unbounded)."""
    kpa: KpaConfig | None = None

    def kpa_config(self) -> KpaConfig:
        return self.kpa or KpaConfig(target_rps=self.capacity_rps)


@dataclass
class LaneState:
    """KPA's per-revision state (kpa_model.KpaState) as arrays over lanes."""

    desired: np.ndarray
    in_panic: np.ndarray
    panic_since: np.ndarray
    max_panic_pods: np.ndarray
    zero_wanted_since: np.ndarray

    @classmethod
    def zeros(cls, n: int) -> "LaneState":
        return cls(np.zeros(n, np.int64), np.zeros(n, bool), np.full(n, np.nan), np.zeros(n, np.int64), np.full(n, np.nan))


def kpa_tick_lanes(state: LaneState, idx: np.ndarray, config: KpaConfig, now: float, stable_rps: np.ndarray,
                   panic_rps: np.ndarray, ready: np.ndarray, panic_concurrency: np.ndarray, min_scale: np.ndarray,
                   max_scale: int = 0) -> np.ndarray:
    """kpa_model.kpa_tick for the lanes `idx` (inputs are already restricted to them): the same
    rules in the same order, with the default stable window."""
    window = config.stable_window_s
    target = config.target_rps * config.target_utilization
    desired_stable = np.where(stable_rps > 0, np.ceil(stable_rps / target - 1e-9), 0).astype(np.int64)
    desired_panic = np.where(panic_rps > 0, np.ceil(panic_rps / target - 1e-9), 0).astype(np.int64)
    has = ready > 0
    max_up = np.ceil(config.max_scale_up_rate * ready).astype(np.int64)
    max_down = np.floor(ready / config.max_scale_down_rate).astype(np.int64)
    desired_stable = np.where(has, np.minimum(np.maximum(desired_stable, max_down), max_up), desired_stable)
    desired_panic = np.where(has, np.minimum(np.maximum(desired_panic, max_down), max_up), desired_panic)
    over_panic = has & (desired_panic / np.maximum(ready, 1) >= config.panic_threshold)

    in_panic = state.in_panic[idx]
    if over_panic.any() or in_panic.any():
        max_panic = state.max_panic_pods[idx]
        since = state.panic_since[idx]
        entering = over_panic & ~in_panic
        max_panic = np.where(entering, ready, max_panic)
        in_panic = in_panic | over_panic
        since = np.where(over_panic, now, since)
        leaving = ~over_panic & in_panic & (now - since >= window)
        in_panic = in_panic & ~leaving
        since = np.where(leaving, np.nan, since)
        max_panic = np.where(leaving, 0, max_panic)
        desired = np.where(in_panic, np.maximum(desired_panic, max_panic), desired_stable)
        max_panic = np.where(in_panic, desired, max_panic)
        state.in_panic[idx], state.panic_since[idx], state.max_panic_pods[idx] = in_panic, since, max_panic
    else:  # nobody in or entering panic: the stable decision, and no panic state to update
        desired = desired_stable
    desired = np.maximum(desired, min_scale)
    if max_scale > 0:
        desired = np.minimum(desired, max_scale)

    # handleScaleToZero: the activator is in the path (excess burst capacity < 0) -> zero at once.
    to_zero = (desired == 0) & has
    if to_zero.any() or not np.isnan(state.zero_wanted_since[idx]).all():
        zero_since = state.zero_wanted_since[idx]
        if config.target_burst_capacity < 0:
            activator = np.ones(len(idx), bool)
        else:
            excess = ready * config.container_concurrency_target - config.target_burst_capacity - panic_concurrency
            activator = (ready == 0) | (excess < 0)
        graced = to_zero & ~activator
        zero_since = np.where(graced & np.isnan(zero_since), now, zero_since)
        hold = graced & (now - zero_since < config.scale_to_zero_grace_s)
        desired = np.where(hold, 1, desired)
        state.zero_wanted_since[idx] = np.where(graced, zero_since, np.nan)
    state.desired[idx] = desired
    return desired


SCALAR_LANES = 8
"""Up to this many lanes due at once, kpa_model.kpa_tick itself runs lane by lane: cheaper
than numpy's per-call overhead on a handful of elements."""


def _kpa_tick_few(state: LaneState, idx: np.ndarray, config: KpaConfig, now: float, stable: np.ndarray,
                  panic: np.ndarray, ready: np.ndarray, cap: float, min_scale: np.ndarray, max_scale: int) -> np.ndarray:
    out = np.empty(len(idx), np.int64)
    for k, lane in enumerate(idx.tolist()):
        since, zero = state.panic_since[lane], state.zero_wanted_since[lane]
        one = KpaState(int(state.desired[lane]), bool(state.in_panic[lane]), None if since != since else float(since),
                       int(state.max_panic_pods[lane]), None if zero != zero else float(zero))
        out[k] = kpa_tick(one, config, now, float(stable[k]), float(panic[k]), int(ready[lane]), float(panic[k]) / cap,
                          min_scale=int(min_scale[lane]), max_scale=max_scale)
        state.desired[lane], state.in_panic[lane], state.max_panic_pods[lane] = one.desired, one.in_panic, one.max_panic_pods
        state.panic_since[lane] = np.nan if one.panic_since is None else one.panic_since
        state.zero_wanted_since[lane] = np.nan if one.zero_wanted_since is None else one.zero_wanted_since
    return out


@dataclass
class LaneTotals:
    requests: np.ndarray
    cold: np.ndarray
    over: np.ndarray
    pod_seconds: np.ndarray
    wasted_pod_seconds: np.ndarray

    @classmethod
    def zeros(cls, n: int) -> "LaneTotals":
        return cls(*(np.zeros(n, np.int64) for _ in range(5)))


@dataclass
class FleetRun:
    totals: LaneTotals
    ready: dict[int, np.ndarray]
    """Per-second ready pods of the recorded lanes, over the whole span."""


def simulate_lanes(
    streams: Callable[[int], np.ndarray],
    stream_of_lane: np.ndarray,
    schedule: np.ndarray,
    config: FleetSimConfig,
    seconds: int,
    scored_from: int = 0,
    record: tuple[int, ...] = (),
    on_hour: Callable[[int, LaneTotals], None] | None = None,
    progress: Callable[[int], None] | None = None,
    distinct: frozenset[int] = frozenset(),
) -> FleetRun:
    """Run every lane over `seconds`. `streams(day)` gives that day's per-second arrivals of
    every stream, (streams, seconds of the day); lane i serves stream `stream_of_lane[i]` with
    min-scale `schedule[i, minute]` (the array may be rewritten ahead of time by `on_hour`,
    called after every simulated hour with the totals so far). Lanes with the same stream and
    the same schedule are the same Service under the same control: each is simulated once,
    except the `distinct` lanes, whose schedule the callback rewrites."""
    full_totals = LaneTotals.zeros(len(stream_of_lane))
    rep, inverse = _unique_lanes(stream_of_lane, schedule, distinct)
    full_schedule, schedule = schedule, None
    stream_of_lane = np.asarray(stream_of_lane)[rep]
    record_full = tuple(record)
    record = tuple(sorted({int(inverse[lane]) for lane in record_full}))

    def expanded(t: LaneTotals) -> LaneTotals:
        for name in ("requests", "cold", "over", "pod_seconds", "wasted_pod_seconds"):
            setattr(full_totals, name, getattr(t, name)[inverse])
        return full_totals

    kpa = config.kpa_config()
    n = len(stream_of_lane)
    cs = int(config.cold_start_s)
    if cs < 1:
        raise ValueError("cold_start_s must be at least 1 s")
    cap = float(config.capacity_rps)
    stable_w = int(round(kpa.stable_window_s))
    panic_w = max(1, int(round(panic_window_s(kpa))))
    state = LaneState.zeros(n)
    ring = np.zeros((cs, n), np.int64)  # pods started at second t sit in slot t % cs until t + cs
    pods = np.zeros(n, np.int64)
    ready = np.zeros(n, np.int64)
    backlog = np.zeros(n, np.int64)
    totals = LaneTotals.zeros(n)
    recorded = np.zeros((len(record), seconds), np.int32)
    rec_lanes = np.array(record, dtype=np.int64)
    carry = None  # the last stable-window seconds of the previous day, per stream
    current_ms = np.zeros(n, np.int64)  # the min-scale in force (set `actuation_delay_s` into a minute)

    def apply(idx: np.ndarray, desired: np.ndarray, s: int) -> None:
        current = pods[idx]
        up = desired > current
        if up.any():
            ring[s % cs, idx[up]] += desired[up] - current[up]
        down = desired < current
        if down.any():
            di = idx[down]
            drop = current[down] - desired[down]
            for back in range(cs):  # pending pods go first, newest first
                slot = (s - back) % cs
                take = np.minimum(drop, ring[slot, di])
                ring[slot, di] -= take
                drop -= take
            ready[di] -= drop
        pods[idx] = desired

    tick = int(round(kpa.tick_s))
    last_arrival = np.full(n, -10**9, np.int64)
    for day in range((seconds + DAY_S - 1) // DAY_S):
        arrivals = streams(day)[:, :max(0, seconds - day * DAY_S)]
        length = arrivals.shape[1]
        head = np.zeros((arrivals.shape[0], stable_w), np.int64) if carry is None else carry
        joined = np.concatenate((head, arrivals), axis=1)
        # Second-major layouts: each step reads one contiguous row, not a column of every lane.
        prefix = np.concatenate((np.zeros((1, arrivals.shape[0]), np.int64), np.cumsum(joined.T, axis=0, dtype=np.int64)))
        carry = joined[:, -stable_w:].astype(np.int64)
        by_second = np.ascontiguousarray(arrivals.T)
        busy = by_second.any(axis=1)
        next_busy = _next_true(busy)
        base = day * DAY_S
        off = 0
        while off < length:
            s = base + off
            slot = s % cs
            matured = ring[slot]
            if matured.any():
                ready += matured
                ring[slot] = 0
            minute, offset = divmod(s, 60)
            if offset == config.actuation_delay_s:
                wanted = current_ms[:] = full_schedule[rep, minute]
                raise_idx = np.flatnonzero(wanted > pods)
                if len(raise_idx):
                    apply(raise_idx, np.maximum(wanted[raise_idx], state.desired[raise_idx]), s)
                    state.desired[raise_idx] = pods[raise_idx]
            a = by_second[off][stream_of_lane].astype(np.int64) if busy[off] else None
            if a is not None:
                last_arrival[a > 0] = s
            # Knative's decider ticks every 2 s; the activator's poke decides at once for a
            # Service with no pod. A steady lane (no request in its stable window, as many pods
            # as its min-scale, not in panic, no scale-to-zero grace running) would decide what
            # it has: it is not evaluated.
            live = ((s - last_arrival < stable_w) | (pods != current_ms) | state.in_panic
                    | ~np.isnan(state.zero_wanted_since))
            due = live if s % tick == 0 else np.zeros(n, bool)
            if a is not None:
                due |= (a > 0) & (pods == 0)
            idx = np.flatnonzero(due)
            if len(idx):
                p = off + stable_w + 1  # prefix index just after second s
                st = stream_of_lane[idx]
                now_row = prefix[p]
                stable = (now_row - prefix[p - stable_w])[st] / stable_w
                panic = (now_row - prefix[p - panic_w])[st] / panic_w
                if len(idx) <= SCALAR_LANES:
                    desired = _kpa_tick_few(state, idx, kpa, float(s), stable, panic, ready, cap, current_ms, config.max_scale)
                else:
                    desired = kpa_tick_lanes(state, idx, kpa, float(s), stable, panic, ready[idx], panic / cap,
                                             current_ms[idx], config.max_scale)
                apply(idx, desired, s)
            scored = s >= scored_from
            has_backlog = backlog.any()
            if a is not None or has_backlog:
                if a is None:
                    a = np.zeros(n, np.int64)
                budget = (ready * cap).astype(np.int64)
                served_old = np.minimum(backlog, budget)
                served_new = np.minimum(a, budget - served_old)
                waiting = a - served_new
                backlog += waiting - served_old
                has_backlog = backlog.any()
                if scored:
                    totals.requests += a
                    cold_now = ready == 0
                    totals.cold += np.where(cold_now, a, 0)
                    totals.over += np.where(cold_now, 0, waiting)
                    used = np.minimum(ready, np.ceil((served_old + served_new) / cap).astype(np.int64))
                    totals.wasted_pod_seconds += pods - used
                    totals.pod_seconds += pods
            elif scored:
                totals.wasted_pod_seconds += pods
                totals.pod_seconds += pods
            # Skip the seconds in which nothing can change: no arrival, no backlog, no pod
            # becoming ready, no actuation, and no tick of a live lane.
            step = 1
            if not has_backlog:
                horizon = min(length, int(next_busy[off + 1]) if off + 1 < length else length)
                to_actuation = (config.actuation_delay_s - offset - 1) % 60 + 1
                horizon = min(horizon, off + to_actuation)
                if ring.any():
                    horizon = off + 1
                elif live.any():  # computed before this second's tick: at worst it skips less
                    horizon = min(horizon, off + (tick - s % tick))
                step = max(1, horizon - off)
            hour_end = (s // 3600 + 1) * 3600
            if on_hour is not None and s + step > hour_end:
                step = hour_end - s  # never skip past an hour: the callback may rewrite what follows
            scored_quiet = max(0, s + step - max(s + 1, scored_from))
            if scored_quiet:
                totals.wasted_pod_seconds += pods * scored_quiet
                totals.pod_seconds += pods * scored_quiet
            if len(rec_lanes):
                recorded[:, s:s + step] = ready[rec_lanes][:, None]
            if on_hour is not None and s + step == hour_end:
                on_hour(hour_end // 3600, expanded(totals))
            off += step
        if progress is not None:
            progress(day)
    row = {lane: k for k, lane in enumerate(record)}
    return FleetRun(expanded(totals), {lane: recorded[row[int(inverse[lane])]] for lane in record_full})


def _unique_lanes(stream_of_lane: np.ndarray, schedule: np.ndarray, distinct: frozenset[int]) -> tuple[np.ndarray, np.ndarray]:
    """(representative lane of each unique lane, unique index of every lane)."""
    seen: dict = {}
    rep: list[int] = []
    inverse = np.empty(len(stream_of_lane), np.int64)
    for lane, stream in enumerate(stream_of_lane):
        key = ("distinct", lane) if lane in distinct else (int(stream), schedule[lane].tobytes())
        if key not in seen:
            seen[key] = len(rep)
            rep.append(lane)
        inverse[lane] = seen[key]
    return np.array(rep, dtype=np.int64), inverse


def _next_true(mask: np.ndarray) -> np.ndarray:
    """For each index, the first index at or after it where `mask` holds (len if none)."""
    n = len(mask)
    index = np.where(mask, np.arange(n), n)
    return np.minimum.accumulate(index[::-1])[::-1] if n else index


@dataclass
class CacheScores:
    model_loads: int = 0
    evictions: int = 0
    load_wait_requests: int = 0


class PoolModelCache:
    """Which models each pool pod holds, minute by minute: a model's first request on a pod
    (since the pod started, or since the model was evicted from it) loads it; a pod keeps at
    most `models_per_pod` models (its memory budget), evicting the least recently used.
    Requests are spread round robin over the ready pods (Knative balances requests, not
    models), so a model with n requests in a minute reaches min(n, pods) pods. Resolution is
    the minute: pods above the minute's fewest ready left during it (newest first, as in the
    simulator) and come back empty; the minute's requests reach up to its most ready pods;
    requests of a minute with no ready pod reach the first pods that become ready.

    Held as a (pod, model) matrix of last-touch clocks (0: not held), so that a minute in which
    every model finds every pod it reaches already holding it (the common case) is one vectorised
    write; from the first model that misses on some pod, models go one at a time in request order
    (a load may evict a model that a later model of the same minute then loads again)."""

    def __init__(self, models_per_pod: int):
        if models_per_pod < 1:
            raise ValueError("a pool pod must hold at least one model")
        self.models_per_pod = models_per_pod
        self.last = np.zeros((0, 0), np.int64)
        self.sizes = np.zeros(0, np.int64)
        self.n_pods = 0
        self.clock = 0
        self.pointer = 0
        self.waiting: dict[int, int] = {}
        self.scores = CacheScores()

    def _reserve(self, pods: int, models: int) -> None:
        have_pods, have_models = self.last.shape
        if pods <= have_pods and models <= have_models:
            return
        grown = np.zeros((max(pods, 2 * have_pods) if pods > have_pods else have_pods,
                          max(models, 2 * have_models) if models > have_models else have_models), np.int64)
        grown[:have_pods, :have_models] = self.last
        sizes = np.zeros(grown.shape[0], np.int64)
        sizes[:have_pods] = self.sizes
        self.last, self.sizes = grown, sizes

    def minute(self, fewest_ready: int, most_ready: int, requests: dict[int, int], scored: bool = True) -> None:
        keep = min(self.n_pods, fewest_ready)
        if keep < self.n_pods:
            self.last[keep:self.n_pods] = 0
            self.sizes[keep:self.n_pods] = 0
        self.n_pods = most_ready
        self._reserve(most_ready, 0)
        if most_ready == 0:
            for model, count in requests.items():
                self.waiting[model] = self.waiting.get(model, 0) + count
            return
        if self.waiting:
            merged = dict(self.waiting)
            for model, count in requests.items():
                merged[model] = merged.get(model, 0) + count
            requests, self.waiting = merged, {}
        if not requests:
            return
        models = np.fromiter(requests.keys(), np.int64, len(requests))
        reach = np.minimum(np.fromiter(requests.values(), np.int64, len(requests)), most_ready)
        self._reserve(most_ready, int(models.max()) + 1)
        ends = np.cumsum(reach)
        firsts = ends - reach
        model_of_pair = np.repeat(models, reach)
        pod_of_pair = (self.pointer + np.arange(int(ends[-1]))) % most_ready
        clocks = self.clock + 1 + np.arange(len(models))
        held = self.last[pod_of_pair, model_of_pair] > 0
        first_miss = len(models) if held.all() else int(np.searchsorted(ends, int(np.argmin(held)), side="right"))
        hits = int(firsts[first_miss]) if first_miss < len(models) else len(pod_of_pair)
        self.last[pod_of_pair[:hits], model_of_pair[:hits]] = np.repeat(clocks[:first_miss], reach[:first_miss])
        for k in range(first_miss, len(models)):
            self._touch(pod_of_pair[firsts[k]:ends[k]], int(models[k]), int(clocks[k]), scored)
        self.pointer += int(ends[-1])
        self.clock += len(models)

    def _touch(self, pods: np.ndarray, model: int, clock: int, scored: bool) -> None:
        new = pods[self.last[pods, model] == 0]
        self.last[pods, model] = clock
        if not len(new):
            return
        self.sizes[new] += 1
        over = new[self.sizes[new] > self.models_per_pod]
        if len(over):
            rows = self.last[over]
            victims = np.where(rows > 0, rows, np.iinfo(np.int64).max).argmin(axis=1)
            self.last[over, victims] = 0
            self.sizes[over] -= 1
        if scored:
            self.scores.model_loads += len(new)
            self.scores.load_wait_requests += len(new)
            self.scores.evictions += len(over)
