"""The event contracts of the forecast function: what it accepts and what it replies.

In: `dev.knative.sources.ping` (PingSource, binary or structured); its `time` attribute is the
tick (so a redelivered ping forecasts the minute it was meant for, and a replayed clock works).
Out: `io.predictive-scaling.forecast.v1`, one event per tick carrying every service, with an id
derived from the ping's source and id, so a redelivery downstream is recognised as a duplicate.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

from cloudevents.core.v1.event import CloudEvent

from fncommon.cloudevent_io import BadEvent  # raised here, rendered by cloudevent_io

PING_TYPE = "dev.knative.sources.ping"
FORECAST_TYPE = "io.predictive-scaling.forecast.v1"
_NAMESPACE = uuid.UUID("5b0d6c1e-8f0a-4a51-9a53-0c2f4f1d7e11")


def check_source(event: CloudEvent, accepted: tuple[str, ...]) -> None:
    """Only the sources this function is meant for may drive it (ACCEPTED_SOURCES; `*` is any)."""
    if "*" not in accepted and event.get_source() not in accepted:
        raise BadEvent(f"event source {event.get_source()!r} is not accepted here (ACCEPTED_SOURCES)")


def tick_time(event: CloudEvent, now: datetime, max_ahead_s: float = 60.0) -> datetime:
    """The minute this ping is for. A ping dated ahead of the wall clock is refused: trusting it
    would move the history's end past every real tick (each of them then reads as stale)."""
    if event.get_type() != PING_TYPE:
        raise BadEvent(f"event type {event.get_type()!r} is not handled here; expected {PING_TYPE!r}")
    when = event.get_time()
    if when is None:
        return now
    when = when if when.tzinfo else when.replace(tzinfo=timezone.utc)
    ahead = (when - now).total_seconds()
    if ahead > max_ahead_s:
        raise BadEvent(f"event time {when.isoformat()} is {ahead:.0f} s ahead of this clock "
                       f"(at most {max_ahead_s:g} s is accepted)")
    return when


def reply_id(source: str, event_id: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{source}\n{event_id}"))


def forecast_event(source: str, ping: CloudEvent, tick: datetime, data: dict) -> CloudEvent:
    return CloudEvent(
        attributes={
            "type": FORECAST_TYPE,
            "source": source,
            "id": reply_id(ping.get_source(), ping.get_id()),
            "time": tick,
            "subject": "tick",
            "datacontenttype": "application/json",
        },
        data=data,
    )


def iso_minute(minute: int, minute_s: int = 60) -> str:
    return datetime.fromtimestamp(minute * minute_s, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
