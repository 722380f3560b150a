"""One tick: ping in -> history topped up -> every service forecast -> forecast event out.

Nothing is invented: a service gets minutes only when the model is loaded and verified and its
history is current; otherwise it is listed with `status: "no-data"` and the reason, which the
scale function reads as "hold". Redis down is the one retryable failure (503): without it the
tick could neither be deduplicated nor recorded.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from typing import Any

import numpy as np
import orjson
import redis
from cloudevents.core.v1.event import CloudEvent
from threadpoolctl import threadpool_limits

from fncommon import json_log
from fncommon.cloudevent_io import BadEvent, Outcome, RetryLater

from . import events, quality
from .history_cache import HistoryCache
from .metrics import TickMetrics
from .model_store import ModelStore
from .prometheus_source import PrometheusSource, PrometheusUnavailable
from .settings import ForecastSettings

log = logging.getLogger("forecast.tick")
SEEN_PREFIX = "forecast:seen:"
PENDING, DONE = b"pending", b"done"
LOG_TTL_S = 86400
LATEST_KEY = "forecast:latest"
LOG_PREFIX = "forecast:log:"
RECORD_BATCH = 500
"""Services per Redis script call when recording a tick's forecasts."""
_RECORD = """
local latest, last, ttl, skip = KEYS[1], tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local blob, at, i = ARGV[5], 1, 1
for size in string.gmatch(ARGV[4], '%d+') do
  i = i + 1
  local key, line = KEYS[i], string.sub(blob, at, at + tonumber(size) - 1)
  at = at + tonumber(size)
  redis.call('HSET', latest, string.sub(key, skip + 1), line)
  redis.call('LPUSH', key, line)
  redis.call('LTRIM', key, 0, last)
  redis.call('EXPIRE', key, ttl)
end
return i - 1
"""
"""One batch of forecasts: KEYS[1] the latest-forecast hash, then each service's log (LOG_PREFIX
+ service); ARGV: the newest entries a log keeps (minus one), the logs' TTL, len(LOG_PREFIX),
the lines' byte lengths (space-separated), and the lines back to back. Each line goes to the hash
(field: the service) and to the head of its log."""
MODEL_WAIT_S = 1.0
"""How long a tick waits for a newly published forecaster to load before it serves the previous one."""


class TickHandler:
    def __init__(self, settings: ForecastSettings, client: redis.Redis | None = None):
        self.settings = settings
        self.redis = client or redis.Redis.from_url(settings.redis_url, password=settings.redis_password,
                                                   socket_timeout=5, socket_connect_timeout=2)
        self.source = PrometheusSource(settings.prometheus_url, settings.query, settings.prometheus_timeout_s,
                                       settings.minute_s)
        self.cache = HistoryCache(self.redis, settings.history_minutes, settings.topup_minutes,
                                  settings.fill_chunk_minutes, settings.fill_max_points, settings.fill_concurrency)
        self.models = ModelStore(settings.forecaster_root, settings.forecaster_sha256)
        self.metrics = TickMetrics(settings.metrics_max_services, settings.quality_window_minutes)
        self._lock = threading.Lock()  # one tick at a time: the history cache is not shared-safe
        self._record_batch = self.redis.register_script(_RECORD)
        self._loading: threading.Thread | None = None
        self._loader_lock = threading.Lock()

    def close(self) -> None:
        self.source.close()
        self.redis.close()

    def ready(self) -> tuple[bool, str]:
        model = self._model(wait_s=0.0)  # a probe never waits on a load
        if model is None:
            return False, self.models.problem or "no forecaster"
        return True, f"forecaster {model.version}"

    def handle(self, event: CloudEvent) -> Outcome:
        """Blocking: the function shim runs it off the event loop, so health probes answer
        during a long tick (a cold fill)."""
        with self._lock:
            return self._handle(event)

    def _handle(self, event: CloudEvent) -> Outcome:
        started = time.perf_counter()
        fields = {"ce_id": event.get_id(), "ce_source": event.get_source(), "ce_type": event.get_type()}
        try:
            tick = events.tick_time(event, datetime.now(timezone.utc), self.settings.max_ahead_s)
            events.check_source(event, self.settings.accepted_sources)
            seen_key = f"{SEEN_PREFIX}{event.get_source()}|{event.get_id()}"
            if not self._claim(seen_key):
                json_log.event(log, "duplicate event: already forecast", **fields, outcome="duplicate")
                self.metrics.tick("duplicate")
                return Outcome(202, headers={"X-Duplicate": "true"})
            try:
                data = self._forecast(tick)
                self._record(data)
            except BaseException:
                _release(self.redis, seen_key)
                raise
            self.redis.set(seen_key, DONE, ex=self.settings.dedupe_ttl_s)
        except BadEvent as exc:
            json_log.event(log, "rejected event", logging.WARNING, **fields, outcome="rejected", reason=str(exc))
            self.metrics.tick("rejected")
            return Outcome.of(exc)
        except RetryLater as exc:
            json_log.event(log, "retry later", logging.WARNING, **fields, outcome="retry", reason=str(exc))
            self.metrics.tick("retry")
            return Outcome.of(exc)
        except redis.RedisError as exc:
            reason = f"redis unavailable: {type(exc).__name__}: {exc}"
            json_log.event(log, "retry later", logging.ERROR, **fields, outcome="retry", reason=reason)
            self.metrics.tick("retry")
            return Outcome.of(RetryLater(reason))
        ok = [s["service"] for s in data["services"] if s["status"] == "ok"]
        held = {s["service"]: s["reason"] for s in data["services"] if s["status"] != "ok"}
        json_log.event(log, "forecast", **fields, outcome="forecast", tick=data["tick"],
                       services_forecast=len(ok), services_without_forecast=len(held),
                       reasons=sorted(set(held.values()))[:5], queries=data["queries"],
                       model=data["model"].get("version"), seconds=round(time.perf_counter() - started, 3))
        self.metrics.services(data["services"])
        if data["model"]:
            self.metrics.model(data["model"])
        self.metrics.tick("forecast", time.perf_counter() - started)
        return Outcome(200, reply=events.forecast_event(self.settings.event_source, event, tick, data))

    def _claim(self, key: str) -> bool:
        """Atomically take the event (SET NX): True to handle it, False for a duplicate of one
        handled already. A delivery still in flight elsewhere is a RetryLater: answering it as a
        duplicate would lose the event if the other delivery then fails."""
        if self.redis.set(key, PENDING, nx=True, ex=self.settings.claim_ttl_s):
            return True
        if self.redis.get(key) == PENDING:
            raise RetryLater("this event is being handled by another delivery")
        return False

    def _model(self, wait_s: float = MODEL_WAIT_S):
        """The verified forecaster now. A newly published one (a refit) is loaded in a background
        thread: a tick waits for it at most `wait_s`, then forecasts with the one it has, and a
        later tick picks the new one up. The first load is waited for (there is nothing else)."""
        if self.models.model is None:
            return self.models.refresh()
        with self._loader_lock:
            if self._loading is None or not self._loading.is_alive():
                self._loading = threading.Thread(target=self.models.refresh, name="forecaster-load", daemon=True)
                self._loading.start()
            loading = self._loading
        loading.join(wait_s)
        return self.models.model

    def _forecast(self, tick: datetime) -> dict:
        end = int((tick.timestamp() - self.settings.ingest_lag_s) // self.settings.minute_s)
        model = self._model()
        sent_before = self.source.queries_sent
        problem: str | None = None
        now_minute = int((time.time() - self.settings.ingest_lag_s) // self.settings.minute_s)
        try:
            self.cache.update(self.source, end, now_minute)
        except PrometheusUnavailable as exc:
            problem = f"prometheus unavailable: {exc}"
        if model is None:
            problem = problem or self.models.problem or "no forecaster"
        data: dict[str, Any] = {
            "tick": tick.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "horizon_start": self._iso(end),
            "model": ({"version": model.version, "sha256": model.sha256, "quantile": model.quantile,
                       "horizon_minutes": model.horizon} if model else {}),
            "metrics": {"preset": self.settings.query.name},
            "queries": self.source.queries_sent - sent_before,
            "services": [],
        }
        if self.models.problem and model is not None:
            data["model"]["warning"] = self.models.problem
        if problem:
            data["error"] = problem
        services = list(self.cache.services)
        data["services"] = [{"service": name, "status": "no-data", "reason": "back-fill pending: Prometheus failed"
                             " to answer for this new service; read again next tick"} for name in self.cache.pending]
        if not services:
            return data
        cache_end = self.cache.end_minute or end
        if problem:
            data["services"] += [self._held(s, problem, cache_end) for s in services]
            return data
        matrix = self.cache.matrix  # float32, services x minutes: rows are handed out as views
        # one pass over the matrix for what the reply, the staleness check and the quality
        # baselines count per row (a pass over a 10,000-service week is ~0.2 s)
        seen, active, last_data, recent_gaps = quality.row_counts(matrix)  # last_data: a column, -1 when none
        stale_cut = self.settings.history_minutes - self.settings.stale_after_minutes
        fresh = [i for i, col in enumerate(last_data) if col >= stale_cut]
        forecasts = None
        if fresh:  # a block of series at a time: never a copy of the whole matrix (peak memory)
            with threadpool_limits(limits=self.settings.predict_threads, user_api="openmp"):
                forecasts = model.estimator.predict_blocks(matrix, np.asarray(fresh),
                                                           start_minute=self.cache.start_minute())
        by_row = {row: k for k, row in enumerate(fresh)}
        start = self.cache.start_minute()
        skill = self._measure(end, cache_end, services, matrix, fresh, forecasts, seen, active)
        windows = _windows_of(seen, recent_gaps, matrix.shape[1], start, cache_end, self.settings.minute_s)
        observed = _observed_all(matrix, start, cache_end, self.settings.minute_s)
        if forecasts is not None:  # Python floats once, rounded in NumPy, not per number (10,000 x horizon)
            point = np.round(forecasts.point.astype(np.float64) / self.settings.minute_s, 6).tolist()
            upper = np.round(forecasts.upper.astype(np.float64) / self.settings.minute_s, 6).tolist()
            p_any = np.round(forecasts.p_any.astype(np.float64), 4).tolist()
            starts = [self._iso(end + h) for h in range(model.horizon)]
        for i, name in enumerate(services):
            if i not in by_row:
                last = "never" if last_data[i] < 0 else self._iso(start + last_data[i])
                data["services"].append({"service": name, "status": "no-data",
                                         "reason": f"stale: last data for the minute {last}", "data_window": windows[i]})
                continue
            k = by_row[i]
            data["services"].append({
                "service": name,
                "status": "ok",
                "minutes": [
                    {"start": at, "point_rps": p, "upper_rps": u, "p_any": q}
                    for at, p, u, q in zip(starts, point[k], upper[k], p_any[k])
                ],
                "data_window": windows[i],
                "observed": observed[i],
                **({"skill": _skill(skill[name])} if name in skill else {}),
            })
        return data

    def _measure(self, end: int, cache_end: int, services: list[str], matrix: np.ndarray, fresh: list[int],
                 forecasts, seen: np.ndarray | None = None, active: np.ndarray | None = None) -> dict[str, quality.Figures]:
        """Online quality: score the earlier forecasts of the minutes this read settled, keep this
        tick's next-minute forecasts for scoring later, and set the per-service gauges. Returns
        each service's rolling figures (sent with its forecast: the scale function's fallback)."""
        self.metrics.scored(self.metrics.quality.score(self.cache.start_minute(), cache_end, services, matrix))
        if forecasts is None:
            return {}
        names = [services[i] for i in fresh]
        point, upper, p_any = forecasts.point[:, 0], forecasts.upper[:, 0], forecasts.p_any[:, 0]
        naive, base_rate = quality.baselines(matrix, end - self.cache.start_minute(), seen, active)  # every row: no copy
        self.metrics.quality.expect(end, names, point, p_any, naive[fresh], base_rate[fresh])
        minute_s = self.settings.minute_s
        figures = self.metrics.quality.per_service()
        self.metrics.forecasts(names, point / minute_s, upper / minute_s, p_any, minute_s, figures)
        return figures

    def _iso(self, minute: int) -> str:
        return events.iso_minute(minute, self.settings.minute_s)

    def _held(self, name: str, reason: str, end: int, row: np.ndarray | None = None) -> dict:
        entry: dict[str, Any] = {"service": name, "status": "no-data", "reason": reason}
        if row is not None:
            entry["data_window"] = _window(row, self.cache.start_minute(), end, self.settings.minute_s)
        return entry

    def _record(self, data: dict) -> None:
        """The latest forecast per service (one hash) and its bounded log, in batches of
        RECORD_BATCH services per script call (`_RECORD`), one pipeline round trip. Each line is
        sent once, the batch's lines as one argument: ~20,000 arguments of ~800 bytes a tick
        at 10,000 services cost redis-py ~0.4 s of command packing and sending."""
        pipe = self.redis.pipeline(transaction=False)
        head = {"tick": data["tick"], "model": data["model"].get("version")}
        lines = [(entry["service"], orjson.dumps({**head, **entry})) for entry in data["services"]]
        for at in range(0, len(lines), RECORD_BATCH):
            batch = lines[at:at + RECORD_BATCH]
            self._record_batch(keys=[LATEST_KEY, *(LOG_PREFIX + service for service, _ in batch)],
                               args=[self.settings.forecast_history - 1, LOG_TTL_S, len(LOG_PREFIX),
                                     " ".join(str(len(line)) for _, line in batch), b"".join(line for _, line in batch)],
                               client=pipe)
        if self.cache.evicted:
            pipe.hdel(LATEST_KEY, *self.cache.evicted)
        pipe.execute()


OBSERVED_MINUTES = 5

def _release(client: redis.Redis, key: str) -> None:
    try:
        client.delete(key)
    except redis.RedisError:
        pass  # the claim expires by itself (claim_ttl_s)


def _windows_of(seen: np.ndarray, recent_gaps: np.ndarray, width: int, start: int, end: int, minute_s: int) -> list[dict]:
    """`_window` of every row, from its counts (quality.row_counts)."""
    first, last = events.iso_minute(start, minute_s), events.iso_minute(end, minute_s)
    windows = []
    for have, missing_recently in zip(seen.tolist(), recent_gaps.tolist()):
        window = {"start": first, "end": last, "minutes_with_data": have, "gap_minutes": width - have}
        if missing_recently:
            window["gap_minutes_last_hour"] = missing_recently
        windows.append(window)
    return windows


def _skill(figures: quality.Figures) -> dict:
    """A service's rolling forecast skill as the event carries it (null: undefined, e.g. the
    Brier skill of a service busy every minute; NaN is not JSON)."""
    def number(value: float) -> float | None:
        return round(float(value), 4) if np.isfinite(value) else None
    return {"brier_skill": number(figures.brier_skill), "mase": number(figures.mase), "minutes": int(figures.minutes)}


def _observed_all(matrix: np.ndarray, start: int, end: int, minute_s: int, last: int = OBSERVED_MINUTES) -> list[dict]:
    """Each service's requests in its last observed minutes (null: not observed): the scale
    function keeps them, bounded, as the minute history its pool plan chooses warmth from. Several
    minutes, so that a missed tick loses nothing. Every row at once: one slice of the last
    columns, rounded in NumPy (10,000 services: no Python float per sample)."""
    k = max(0, min(last, matrix.shape[1], end - start))
    values = np.asarray(matrix[:, end - start - k:end - start] if k else matrix[:, :0], dtype=np.float64)
    rounded = np.round(values, 3)
    first = events.iso_minute(end - k, minute_s)
    if not np.isnan(rounded).any():
        return [{"start": first, "requests": row} for row in rounded.tolist()]
    return [{"start": first, "requests": [None if v != v else v for v in row]} for row in rounded.tolist()]


def _window(row: np.ndarray, start: int, end: int, minute_s: int) -> dict:
    valid = ~np.isnan(row)
    gaps = int((~valid).sum())
    window = {"start": events.iso_minute(start, minute_s), "end": events.iso_minute(end, minute_s),
              "minutes_with_data": int(valid.sum()), "gap_minutes": gaps}
    recent = ~valid[-60:]
    if recent.any():
        window["gap_minutes_last_hour"] = int(recent.sum())
    return window
