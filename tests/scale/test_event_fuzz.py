"""Whatever a forecast event carries, parsing it ends in a ParsedForecast or a BadEvent (a 400 with
the reason), never in another exception (a 500): hypothesis generates the data."""

from __future__ import annotations

from datetime import datetime, timezone

from cloudevents.core.v1.event import CloudEvent
from hypothesis import given, settings
from hypothesis import strategies as st

from scale.events import BadEvent, ParsedForecast, parse_forecast

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
minute = st.fixed_dictionaries({}, optional={
    "point_rps": json_values, "upper_rps": json_values, "p_any": json_values, "start": json_values})
service = st.fixed_dictionaries({}, optional={
    "service": st.sampled_from(["models/wine", "wine", "a/b/c", ""]) | json_values,
    "status": st.sampled_from(["ok", "no-data", "other"]) | json_values,
    "minutes": st.lists(minute, max_size=3) | json_values, "reason": json_values})
data = st.fixed_dictionaries({}, optional={
    "tick": st.sampled_from(["2026-11-22T10:00:00Z", "yesterday"]) | json_values,
    "services": st.lists(service, max_size=3) | json_values, "model": json_values}) | json_values


@settings(max_examples=400, deadline=None)
@given(data)
def test_parsing_a_forecast_event_never_crashes(payload):
    event = CloudEvent(attributes={"type": "io.predictive-scaling.forecast.v1", "source": "/fuzz", "id": "1",
                                   "time": datetime(2026, 11, 22, tzinfo=timezone.utc),
                                   "datacontenttype": "application/json"}, data=payload)
    try:
        result = parse_forecast(event)
    except BadEvent as exc:
        assert str(exc)
        return
    assert isinstance(result, ParsedForecast)
    for entry in result.services:
        assert entry.minutes is None or all(0 <= m.p_any <= 1 and m.upper_rps >= 0 for m in entry.minutes)
