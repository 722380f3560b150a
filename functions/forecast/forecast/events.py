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

PING_TYPE = "dev.knative.sources.ping"
FORECAST_TYPE = "io.predictive-scaling.forecast.v1"
_NAMESPACE = uuid.UUID("5b0d6c1e-8f0a-4a51-9a53-0c2f4f1d7e11")


class BadEvent(ValueError):
    """A malformed or unknown event: HTTP 400, dead-lettered by the broker, never retried."""


class RetryLater(RuntimeError):
    """A transient fault (Redis down): HTTP 503, the broker retries with backoff."""


def tick_time(event: CloudEvent, now: datetime) -> datetime:
    if event.get_type() != PING_TYPE:
        raise BadEvent(f"event type {event.get_type()!r} is not handled here; expected {PING_TYPE!r}")
    when = event.get_time()
    if when is None:
        return now
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


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
