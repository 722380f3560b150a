"""Many Knative Services at once, second by second, over "lanes" (one lane = one Service under
one policy setting), for fleets too large for training/simulator.py's loop.

The model is training/simulator.py's (the single-trace backtest keeps using that one; a test
runs both on the same trace and compares): pods have a capacity in req/s and are ready
`cold_start_s` after they start; Knative's KPA decides every 2 s with the rules of
training/kpa_model.py (`kpa_tick_lane`, checked against `kpa_tick` rule by rule in a test);
while no pod is ready the activator buffers requests and pokes the autoscaler at once;
min-scale comes from a schedule set once a minute, `actuation_delay_s` into the minute (raising
it starts pods at once, as the scale function's warm-up request does). Every controller the
fleet backtest scores decides from counts and forecasts, never from the simulated pods, so its
whole schedule is known before the run, except the fleet budget's price, which a callback may
rewrite for the minutes still ahead (it is fed back once an hour).

Why compiled (numba): a busy fleet has a request in nearly every second of every lane, so no
second can be skipped, and a numpy step per second pays its call overhead ~30 times a second
for 14 days (a 20-minute ServeGen run). Lanes do not interact within an hour (the callback runs
between hours), so the kernel runs each lane's hour in order, its state in registers.

Scored per request: cold (arrived while no pod of its Service was ready) and over capacity
(arrived while pods were ready but not served within its arrival second); per second: pods
existing (pending or ready) as pod-seconds, and wasted pod-seconds (pods beyond
ceil(requests served that second / capacity): capacity no request used).
The per-second ready count of chosen lanes is kept for the pool's per-model scores
(`PoolModelCache`: model loads and LRU evictions per pod).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from numba import njit

from training.kpa_model import KpaConfig, panic_window_s

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
    """KPA's per-revision state (kpa_model.KpaState) as arrays over lanes (NaN: no timer)."""

    desired: np.ndarray
    in_panic: np.ndarray
    panic_since: np.ndarray
    max_panic_pods: np.ndarray
    zero_wanted_since: np.ndarray

    @classmethod
    def zeros(cls, n: int) -> "LaneState":
        return cls(np.zeros(n, np.int64), np.zeros(n, np.bool_), np.full(n, np.nan), np.zeros(n, np.int64), np.full(n, np.nan))


def kpa_constants(config: KpaConfig) -> np.ndarray:
    """The KpaConfig numbers the compiled tick reads, in `_K_*` order (numba takes no dataclass)."""
    return np.array([config.target_rps * config.target_utilization, config.max_scale_up_rate, config.max_scale_down_rate,
                     config.panic_threshold, config.stable_window_s, config.scale_to_zero_grace_s,
                     config.target_burst_capacity, config.container_concurrency_target], np.float64)


_K_TARGET, _K_UP, _K_DOWN, _K_PANIC, _K_WINDOW, _K_GRACE, _K_TBC, _K_CC = range(8)


@njit(cache=True)
def kpa_tick_lane(desired_of, in_panic_of, panic_since_of, max_panic_of, zero_since_of, lane, k, now,
                  stable_rps, panic_rps, ready, panic_concurrency, min_scale, max_scale, retention_s=0.0, window_s=0.0):
    """kpa_model.kpa_tick for one lane of the state arrays, compiled: the same rules in the same
    order, with the default stable window (a test holds the two equal rule by rule).

    `retention_s`: the Revision's scale-to-zero-pod-retention-period, as knative/serving's
    pkg/reconciler/autoscaling/kpa/scaler.go `handleScaleToZero` applies it (Active=False branch):
    once the autoscaler wants zero the PA goes inactive, and the last pod stays until it has been
    inactive for max(scale-to-zero-grace-period, retention) (`lastPodRetention`, `durationMax`,
    `InactiveFor`), also when the activator is already in the path (the retention is "a hard
    deadline, regardless of network programming state"). It overlaps the grace period, it does
    not add to it; the stable window of no traffic comes before both.

    `window_s`: the lane's stable window now (0: the config's), which also ends a panic."""
    target = k[_K_TARGET]
    desired_stable = int(math.ceil(stable_rps / target - 1e-9)) if stable_rps > 0 else 0
    desired_panic = int(math.ceil(panic_rps / target - 1e-9)) if panic_rps > 0 else 0
    over_panic = False
    if ready > 0:
        max_up = int(math.ceil(k[_K_UP] * ready))
        max_down = int(math.floor(ready / k[_K_DOWN]))
        desired_stable = min(max(desired_stable, max_down), max_up)
        desired_panic = min(max(desired_panic, max_down), max_up)
        over_panic = desired_panic / ready >= k[_K_PANIC]
    if over_panic:
        if not in_panic_of[lane]:
            in_panic_of[lane] = True
            max_panic_of[lane] = ready
        panic_since_of[lane] = now
    elif in_panic_of[lane] and not np.isnan(panic_since_of[lane]) and now - panic_since_of[lane] >= (
            window_s if window_s > 0 else k[_K_WINDOW]):
        in_panic_of[lane] = False
        panic_since_of[lane] = np.nan
        max_panic_of[lane] = 0
    desired = desired_stable
    if in_panic_of[lane]:
        desired = max(desired_panic, max_panic_of[lane])
        max_panic_of[lane] = desired
    desired = max(desired, min_scale)
    if max_scale > 0:
        desired = min(desired, max_scale)
    if desired == 0 and ready > 0:
        # handleScaleToZero: at once when the activator is already in the path, else after grace.
        if k[_K_TBC] < 0:
            activator = True
        else:
            activator = ready * k[_K_CC] - k[_K_TBC] - panic_concurrency < 0
        if activator and retention_s <= 0:
            zero_since_of[lane] = np.nan
        else:
            if np.isnan(zero_since_of[lane]):
                zero_since_of[lane] = now
            hold = retention_s if activator else max(k[_K_GRACE], retention_s)
            if now - zero_since_of[lane] < hold:
                desired = 1
            elif activator:
                zero_since_of[lane] = np.nan
    else:
        zero_since_of[lane] = np.nan
    desired_of[lane] = desired
    return desired


@njit(cache=True)
def _set_pods(ring, lane, s, cs, pods, ready, desired):
    """Scale lane to `desired` pods at second s: new pods start (ready cs seconds later); a
    lower count removes pending pods first, newest first, then ready ones. Returns ready."""
    if desired > pods:
        ring[lane, s % cs] += desired - pods
    elif desired < pods:
        drop = pods - desired
        for back in range(cs):
            slot = (s - back) % cs
            take = min(drop, ring[lane, slot])
            ring[lane, slot] -= take
            drop -= take
        ready -= drop
    return ready


@njit(cache=True)
def _panic_width(window, panic_pct, tick):
    """kpa_model.panic_window_s in whole seconds (at least one)."""
    return max(1, int(round(max(float(tick), window * panic_pct / 100.0))))


@njit(cache=True)
def _recent(joined, st, col, width):
    """Arrivals of stream `st` in its last `width` columns up to `col`."""
    total = 0
    for c in range(col - width + 1, col + 1):
        total += joined[st, c]
    return total


@njit(cache=True)
def _simulate_span(joined, head, base, s0, s1, stream_of_lane, rep, schedule, retention, window, wstate, panic_pct,
                   ring, pods_of, ready_of, backlog_of,
                   last_arrival_of, current_of, desired_of, in_panic_of, panic_since_of,
                   max_panic_of, zero_since_of, k, cs, cap, stable_w, panic_w, tick, delay, max_scale, scored_from,
                   requests_of, cold_of, over_of, pod_seconds_of, wasted_of, record_row, recorded):
    """Seconds [s0, s1) of one day (second `base` is column `head` of `joined`, the day's
    arrivals per stream after the previous day's last `head` seconds), lane by lane: within the
    span no lane's schedule changes (the hourly callback runs between spans), so lanes are
    independent and each runs its seconds in order, its state in registers.

    `window[row, minute]`: the stable window set then (0: the config's `stable_w`); `wstate[lane]`
    holds (window in force, seconds of data its stable and panic averages hold, when it changed):
    Knative resizes a running Revision's windows in place, and a longer window averages only the
    span the shorter one held until it has filled (training/simulator.py `resize`)."""
    for lane in range(len(stream_of_lane)):
        st = stream_of_lane[lane]
        row = rep[lane]
        pods, ready, backlog = pods_of[lane], ready_of[lane], backlog_of[lane]
        last_arrival, current = last_arrival_of[lane], current_of[lane]
        keep = float(retention[row, max(0, s0 // 60 - 1)])  # the minute before: set `delay` seconds into the next
        w_now, span_s, span_p, resized_at = wstate[lane, 0], wstate[lane, 1], wstate[lane, 2], wstate[lane, 3]
        # The rolling windows' sums: seconds (s - w, s], computed once here, then kept up to date.
        first = s0 - base + head
        win = 0
        for c in range(first - stable_w, first):
            win += joined[st, c]
        pan = 0
        for c in range(first - panic_w, first):
            pan += joined[st, c]
        requests = cold = over = pod_s = wasted = 0
        for s in range(s0, s1):
            col = s - base + head
            a = joined[st, col]
            win += a - joined[st, col - stable_w]
            pan += a - joined[st, col - panic_w]
            slot = s % cs
            if ring[lane, slot]:
                ready += ring[lane, slot]
                ring[lane, slot] = 0
            minute = s // 60
            if s - minute * 60 == delay:
                current = schedule[row, minute]
                keep = float(retention[row, minute])
                w = float(window[row, minute]) if window[row, minute] > 0 else float(stable_w)
                if w != w_now:
                    held = s - resized_at
                    old_s = min(w_now, span_s + held)
                    old_p = min(float(_panic_width(w_now, panic_pct, tick)), span_p + held)
                    span_s = min(old_s, w)
                    span_p = min(old_p, float(_panic_width(w, panic_pct, tick)))
                    w_now, resized_at = w, float(s)
                if current > pods:
                    wanted = max(current, desired_of[lane])
                    ready = _set_pods(ring, lane, s, cs, pods, ready, wanted)
                    pods = wanted
                    desired_of[lane] = pods
            if a > 0:
                last_arrival = s
            due = a > 0 and pods == 0
            if not due and s % tick == 0:
                due = (s - last_arrival < stable_w or pods != current or in_panic_of[lane]
                       or not np.isnan(zero_since_of[lane]))
            if due:
                held = s - resized_at
                eff_s = int(round(min(w_now, span_s + held)))
                eff_p = int(round(min(float(_panic_width(w_now, panic_pct, tick)), span_p + held)))
                stable_rate = win / stable_w if eff_s == stable_w else _recent(joined, st, col, max(1, eff_s)) / max(1, eff_s)
                panic = pan / panic_w if eff_p == panic_w else _recent(joined, st, col, max(1, eff_p)) / max(1, eff_p)
                desired = kpa_tick_lane(desired_of, in_panic_of, panic_since_of, max_panic_of, zero_since_of, lane, k,
                                        float(s), stable_rate, panic, ready, panic / cap, current, max_scale, keep, w_now)
                ready = _set_pods(ring, lane, s, cs, pods, ready, desired)
                pods = desired
            scored = s >= scored_from
            if a > 0 or backlog > 0:
                budget = int(ready * cap)
                served_old = min(backlog, budget)
                served_new = min(a, budget - served_old)
                waiting = a - served_new
                backlog += waiting - served_old
                if scored:
                    requests += a
                    if ready == 0:
                        cold += a
                    else:
                        over += waiting
                    used = min(ready, int(math.ceil((served_old + served_new) / cap)))
                    wasted += pods - used
                    pod_s += pods
            elif scored:
                wasted += pods
                pod_s += pods
            if record_row[lane] >= 0:
                recorded[record_row[lane], s] = ready
        pods_of[lane], ready_of[lane], backlog_of[lane] = pods, ready, backlog
        wstate[lane, 0], wstate[lane, 1], wstate[lane, 2], wstate[lane, 3] = w_now, span_s, span_p, resized_at
        last_arrival_of[lane], current_of[lane] = last_arrival, current
        requests_of[lane] += requests
        cold_of[lane] += cold
        over_of[lane] += over
        pod_seconds_of[lane] += pod_s
        wasted_of[lane] += wasted


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
    retention: np.ndarray | None = None,
    window: np.ndarray | None = None,
) -> FleetRun:
    """Run every lane over `seconds`. `streams(day)` gives that day's per-second arrivals of
    every stream, (streams, seconds of the day); lane i serves stream `stream_of_lane[i]` with
    min-scale `schedule[i, minute]` (the array may be rewritten ahead of time by `on_hour`,
    called after every simulated hour with the totals so far). Lanes with the same stream and
    the same schedule are the same Service under the same control: each is simulated once,
    except the `distinct` lanes, whose schedule the callback rewrites. `retention[i, minute]`:
    lane i's scale-to-zero-pod-retention-period in seconds then (0: none; `kpa_tick_lane`).
    `window[i, minute]`: lane i's stable window (autoscaling.knative.dev/window) in seconds from
    `actuation_delay_s` into that minute (0: the config's); at most the config's, whose seconds
    are the ones kept."""
    full_totals = LaneTotals.zeros(len(stream_of_lane))
    schedule = np.ascontiguousarray(schedule, dtype=np.int64)
    retention = np.zeros_like(schedule) if retention is None else np.ascontiguousarray(retention, dtype=np.int64)
    window = np.zeros_like(schedule) if window is None else np.ascontiguousarray(window, dtype=np.int64)
    rep, inverse = _unique_lanes(stream_of_lane, schedule, distinct, retention, window)
    lanes_stream = np.ascontiguousarray(np.asarray(stream_of_lane, dtype=np.int64)[rep])
    record_full = tuple(record)
    record = tuple(sorted({int(inverse[lane]) for lane in record_full}))

    def expanded(t: LaneTotals) -> LaneTotals:
        for name in ("requests", "cold", "over", "pod_seconds", "wasted_pod_seconds"):
            setattr(full_totals, name, getattr(t, name)[inverse])
        return full_totals

    kpa = config.kpa_config()
    n = len(lanes_stream)
    cs = int(config.cold_start_s)
    if cs < 1:
        raise ValueError("cold_start_s must be at least 1 s")
    stable_w = int(round(kpa.stable_window_s))
    panic_w = max(1, int(round(panic_window_s(kpa))))
    if window.max(initial=0) > stable_w:
        raise ValueError(f"a lane's window is longer than the config's {stable_w} s: the simulator keeps only that many seconds")
    wstate = np.tile(np.array([stable_w, stable_w, panic_w, 0.0]), (n, 1))
    state = LaneState.zeros(n)
    ring = np.zeros((n, cs), np.int64)  # pods started at second t sit in slot t % cs until t + cs
    pods, ready, backlog = (np.zeros(n, np.int64) for _ in range(3))
    last_arrival = np.full(n, -10**9, np.int64)
    current_ms = np.zeros(n, np.int64)  # the min-scale in force (set `actuation_delay_s` into a minute)
    totals = LaneTotals.zeros(n)
    recorded = np.zeros((len(record), seconds), np.int32)
    record_row = np.full(n, -1, np.int64)
    for row, lane in enumerate(record):
        record_row[lane] = row
    constants = kpa_constants(kpa)
    carry = None  # the last stable-window seconds of the previous day, per stream
    for day in range((seconds + DAY_S - 1) // DAY_S):
        arrivals = np.asarray(streams(day))[:, :max(0, seconds - day * DAY_S)]
        head = np.zeros((arrivals.shape[0], stable_w), np.int64) if carry is None else carry
        joined = np.ascontiguousarray(np.concatenate((head, arrivals), axis=1), dtype=np.int64)
        carry = joined[:, -stable_w:].copy()
        base = day * DAY_S
        for s0 in range(base, base + arrivals.shape[1], 3600):
            s1 = min(base + arrivals.shape[1], s0 + 3600)
            _simulate_span(joined, stable_w, base, s0, s1, lanes_stream, rep, schedule, retention, window, wstate,
                           kpa.panic_window_percentage, ring, pods, ready, backlog,
                           last_arrival, current_ms, state.desired, state.in_panic,
                           state.panic_since, state.max_panic_pods, state.zero_wanted_since, constants, cs,
                           float(config.capacity_rps), stable_w, panic_w, int(round(kpa.tick_s)), config.actuation_delay_s,
                           config.max_scale, scored_from, totals.requests, totals.cold, totals.over,
                           totals.pod_seconds, totals.wasted_pod_seconds, record_row, recorded)
            if on_hour is not None and s1 % 3600 == 0:
                on_hour(s1 // 3600, expanded(totals))
        if progress is not None:
            progress(day)
    row_of = {lane: k for k, lane in enumerate(record)}
    return FleetRun(expanded(totals), {lane: recorded[row_of[int(inverse[lane])]] for lane in record_full})


def _unique_lanes(stream_of_lane: np.ndarray, schedule: np.ndarray, distinct: frozenset[int],
                  retention: np.ndarray | None = None, window: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(representative lane of each unique lane, unique index of every lane)."""
    seen: dict = {}
    rep: list[int] = []
    inverse = np.empty(len(stream_of_lane), np.int64)
    for lane, stream in enumerate(stream_of_lane):
        key = ("distinct", lane) if lane in distinct else (
            int(stream), schedule[lane].tobytes(), b"" if retention is None or not retention[lane].any() else retention[lane].tobytes(),
            b"" if window is None or not window[lane].any() else window[lane].tobytes())
        if key not in seen:
            seen[key] = len(rep)
            rep.append(lane)
        inverse[lane] = seen[key]
    return np.array(rep, dtype=np.int64), inverse


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
