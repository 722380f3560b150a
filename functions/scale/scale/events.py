"""The event contracts of the scale function.

In: `io.predictive-scaling.forecast.v1` (the forecast function's reply). Every field this
function relies on is checked here; anything else is a 400 with the reason, so a malformed
forecast goes to the dead-letter sink instead of near a cluster.
Out: `io.predictive-scaling.decision.v1`, one per forecast, for every service it names.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

from cloudevents.core.v1.event import CloudEvent

from fncommon.cloudevent_io import BadEvent  # raised here, rendered by cloudevent_io

from .fallback import Skill
from .min_scale_policy import MinuteForecast

FORECAST_TYPE = "io.predictive-scaling.forecast.v1"
DECISION_TYPE = "io.predictive-scaling.decision.v1"
_NAMESPACE = uuid.UUID("a7f1c2d4-3b5e-4c6f-8d9a-1e2f3a4b5c6d")


@dataclass(frozen=True)
class ServiceForecast:
    namespace: str
    name: str
    minutes: list[MinuteForecast] | None
    """None when the forecast function had no data for it (`reason` says why): hold."""
    reason: str
    observed: tuple[int, tuple[float | None, ...]] | None = None
    """(first minute since the epoch, requests in each minute from it; None: not observed): the
    service's last observed minutes, which the pool plan keeps as its bounded history."""
    skill: Skill | None = None
    """The forecast's rolling skill for this service, as the forecast function measured it
    (None: not sent): what the fallback to the keep-alive reads."""
    minute_s: int = 60
    """The event's minute in seconds (60 on a cluster): the observed counts are per such minute."""

    @property
    def observed_counts(self) -> tuple[float | None, ...] | None:
        """The observed minutes' counts, oldest first (None: no observed block)."""
        return None if self.observed is None else self.observed[1]

    @property
    def last_observed_rps(self) -> float | None:
        """The request rate of the last observed minute (None: none sent, or not observed)."""
        counts = self.observed_counts
        last = counts[-1] if counts else None
        return None if last is None else last / self.minute_s

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class ParsedForecast:
    tick: datetime
    services: list[ServiceForecast]
    model_version: str | None


def parse_forecast(event: CloudEvent) -> ParsedForecast:
    if event.get_type() != FORECAST_TYPE:
        raise BadEvent(f"event type {event.get_type()!r} is not handled here; expected {FORECAST_TYPE!r}")
    data = event.get_data()
    if not isinstance(data, dict):
        raise BadEvent("data must be a JSON object")
    try:
        tick = datetime.strptime(str(data["tick"]), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except (KeyError, ValueError):
        raise BadEvent("data.tick must be a UTC time like 2026-11-22T10:00:00Z") from None
    entries = data.get("services")
    if not isinstance(entries, list):
        raise BadEvent("data.services must be a list")
    services = []
    times = _TimeMemo()
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("service"), str) or entry["service"].count("/") != 1:
            raise BadEvent(f"data.services[{i}].service must be 'namespace/name'")
        namespace, name = entry["service"].split("/")
        minute_s = _minute_length(entry.get("minutes"), times)
        observed = _observed(entry.get("observed"), i, minute_s, times)
        if entry.get("status") == "ok":
            services.append(ServiceForecast(namespace, name, _minutes(entry.get("minutes"), i), "ok", observed,
                                            _skill(entry.get("skill"), i), minute_s))
        elif entry.get("status") == "no-data":
            services.append(ServiceForecast(namespace, name, None, str(entry.get("reason", "no data")), observed,
                                            minute_s=minute_s))
        else:
            raise BadEvent(f"data.services[{i}].status must be 'ok' or 'no-data'")
    model = data.get("model")
    model = model if isinstance(model, dict) else {}
    return ParsedForecast(tick, services, model.get("version"))


def _minutes(raw, i: int) -> list[MinuteForecast]:
    if not isinstance(raw, list) or not raw:
        raise BadEvent(f"data.services[{i}].minutes must be a non-empty list")
    minutes = []
    for j, m in enumerate(raw):
        try:
            point, upper, p_any = (float(m["point_rps"]), float(m["upper_rps"]), float(m["p_any"]))
        except (KeyError, TypeError, ValueError):
            raise BadEvent(f"data.services[{i}].minutes[{j}] needs numeric point_rps, upper_rps, p_any") from None
        if not (0 <= point < math.inf and 0 <= upper < math.inf and 0 <= p_any <= 1):  # NaN fails every comparison
            raise BadEvent(f"data.services[{i}].minutes[{j}]: rates must be finite and >= 0, p_any in [0, 1]")
        minutes.append(MinuteForecast(point_rps=point, upper_rps=upper, p_any=p_any))
    return minutes


class _TimeMemo(dict):
    """UTC minute text -> datetime, parsed once per event: 10,000 services name the same few
    minutes, and `strptime` (locale lookups, regex) was most of an event's parse time."""

    def __missing__(self, text: str) -> datetime | None:
        try:
            value = datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        except ValueError:
            value = None  # not a UTC minute: remembered too, and refused at every lookup
        if len(self) < 10_000:  # bounded whatever the event holds
            self[text] = value
        return value

    def parse(self, text: str) -> datetime:
        value = self[text]
        if value is None:
            raise ValueError(f"{text[:40]!r} is not a UTC time like 2026-11-22T10:00:00Z")
        return value


def _skill(raw, i: int) -> Skill | None:
    """The optional `skill` block: {"brier_skill": number or null, "mase": number or null,
    "minutes": scored minutes}; null stands for an undefined figure (NaN is not JSON)."""
    if raw is None:
        return None
    problem = BadEvent(f"data.services[{i}].skill must be {{brier_skill: number or null, mase: number or null, "
                       f"minutes: integer >= 0}}")
    if not isinstance(raw, dict):
        raise problem
    figures = []
    for key in ("brier_skill", "mase"):
        value = raw.get(key)
        if value is None:
            figures.append(math.nan)
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            figures.append(float(value))
        else:
            raise problem
    minutes = raw.get("minutes")
    if not isinstance(minutes, int) or isinstance(minutes, bool) or minutes < 0:
        raise problem
    return Skill(figures[0], figures[1], minutes)


def _minute_length(raw, times: _TimeMemo | None = None) -> int:
    """The event's minute in seconds, from the spacing of its forecast minutes: 60 on a cluster;
    shorter where local mode compresses time (the forecast function's MINUTE_SECONDS)."""
    times = _TimeMemo() if times is None else times
    try:
        first, second = (times.parse(str(m["start"])) for m in raw[:2])
        return max(1, int((second - first).total_seconds()))
    except (TypeError, KeyError, ValueError, IndexError):
        return 60


def _observed(raw, i: int, minute_s: int = 60, times: _TimeMemo | None = None) -> tuple[int, tuple[float | None, ...]] | None:
    """The optional `observed` block: {"start": minute, "requests": [count or null, ...]}."""
    if raw is None:
        return None
    times = _TimeMemo() if times is None else times
    try:
        start = times.parse(str(raw["start"]))
        values = raw["requests"]
        if not isinstance(values, list) or len(values) > 60:
            raise ValueError
        counts = tuple(None if v is None else float(v) for v in values)
    except (KeyError, TypeError, ValueError):
        raise BadEvent(f"data.services[{i}].observed must be {{start: UTC minute, requests: [at most 60 counts or null]}}") from None
    if any(c is not None and (not math.isfinite(c) or c < 0) for c in counts) or int(start.timestamp()) % minute_s:
        raise BadEvent(f"data.services[{i}].observed: counts must be finite and >= 0, start a whole minute")
    return int(start.timestamp() // 60), counts


def check_trust(event: CloudEvent, forecast: ParsedForecast, accepted: tuple[str, ...], max_ahead_s: float) -> None:
    """Only the forecast function may drive this one (ACCEPTED_SOURCES), and never with a tick
    ahead of this clock: a future tick would be "newer" than every real forecast after it."""
    if "*" not in accepted and event.get_source() not in accepted:
        raise BadEvent(f"event source {event.get_source()!r} is not accepted here (ACCEPTED_SOURCES)")
    ahead = (forecast.tick - datetime.now(timezone.utc)).total_seconds()
    if ahead > max_ahead_s:
        raise BadEvent(f"data.tick {forecast.tick.isoformat()} is {ahead:.0f} s ahead of this clock "
                       f"(at most {max_ahead_s:g} s is accepted)")


def decision_event(source: str, forecast: CloudEvent, tick: datetime, data: dict) -> CloudEvent:
    return CloudEvent(attributes={
        "type": DECISION_TYPE, "source": source,
        "id": str(uuid.uuid5(_NAMESPACE, f"{forecast.get_source()}\n{forecast.get_id()}")),
        "time": tick, "datacontenttype": "application/json",
    }, data=data)
