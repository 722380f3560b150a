"""An event's minute stamps are parsed once per distinct text (10,000 services share a few): the
answers must be those of parsing each one, a bad stamp refused wherever it repeats."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from cloudevents.core.v1.event import CloudEvent

from scale.events import BadEvent, parse_forecast


def event(services: list[dict]) -> CloudEvent:
    return CloudEvent(attributes={"type": "io.predictive-scaling.forecast.v1", "source": "/t", "id": "1",
                                  "time": datetime(2026, 11, 22, tzinfo=timezone.utc),
                                  "datacontenttype": "application/json"},
                      data={"tick": "2026-11-22T10:00:00Z", "services": services})


def entry(name: str, starts: list[str], observed_start: str, requests: list) -> dict:
    return {"service": f"models/{name}", "status": "ok",
            "minutes": [{"start": s, "point_rps": 1.0, "upper_rps": 2.0, "p_any": 0.5} for s in starts],
            "observed": {"start": observed_start, "requests": requests}}


def test_shared_and_distinct_stamps_parse_as_each_on_its_own():
    minute = ["2026-11-22T10:00:00Z", "2026-11-22T10:01:00Z"]
    fast = ["2026-11-22T10:00:00Z", "2026-11-22T10:00:02Z"]  # local mode's 2 s minutes
    parsed = parse_forecast(event([
        entry("a", minute, "2026-11-22T09:55:00Z", [1, None, 2]),
        entry("b", minute, "2026-11-22T09:55:00Z", [0]),
        entry("c", fast, "2026-11-22T09:59:58Z", [3]),
    ]))
    by_name = {s.name: s for s in parsed.services}
    start = int(datetime(2026, 11, 22, 9, 55, tzinfo=timezone.utc).timestamp() // 60)
    assert by_name["a"].observed == (start, (1.0, None, 2.0)) and by_name["b"].observed == (start, (0.0,))
    assert by_name["c"].observed[0] == int(datetime(2026, 11, 22, 9, 59, 58, tzinfo=timezone.utc).timestamp() // 60)


def test_a_bad_stamp_is_refused_each_time_it_repeats():
    minute = ["2026-11-22T10:00:00Z", "2026-11-22T10:01:00Z"]
    with pytest.raises(BadEvent, match=r"services\[0\]\.observed"):
        parse_forecast(event([entry("a", minute, "yesterday", [1]), entry("b", minute, "yesterday", [1])]))
    with pytest.raises(BadEvent, match=r"services\[1\]\.observed"):
        parse_forecast(event([entry("a", minute, "2026-11-22T09:55:00Z", [1]), entry("b", minute, "yesterday", [1])]))
    # a 2 s minute is whole only where the minutes say so: the same observed stamp is refused under 60 s minutes
    with pytest.raises(BadEvent, match=r"services\[1\]\.observed.*whole minute"):
        parse_forecast(event([entry("a", ["2026-11-22T10:00:00Z", "2026-11-22T10:00:02Z"], "2026-11-22T09:59:58Z", [1]),
                              entry("b", minute, "2026-11-22T09:59:58Z", [1])]))
