"""The shared package's own behaviour where it differs from a per-function copy: its modules log for
whichever function runs them, so configuring a function's log also formats theirs."""

from __future__ import annotations

import json
import logging

from fncommon import json_log


def test_a_shared_modules_log_line_is_json_once_the_function_configures_its_log(capsys):
    json_log.configure("scale", "INFO")
    json_log.event(logging.getLogger("fncommon.metrics_server"), "metrics served", port=9464)
    json_log.event(logging.getLogger("scale.scaler"), "decided", tick=3)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(line["msg"], line.get("port"), line.get("tick")) for line in lines] == [
        ("metrics served", 9464, None), ("decided", None, 3)]


def test_a_json_reply_goes_on_the_wire_as_the_same_value_and_other_data_unchanged():
    from datetime import datetime, timezone

    from cloudevents.core.bindings.http import from_binary_event, to_binary_event
    from cloudevents.core.v1.event import CloudEvent

    from fncommon.cloudevent_io import wire_form

    attributes = {"type": "t.v1", "source": "/s", "id": "1", "subject": "tick", "datacontenttype": "application/json",
                  "time": datetime(2026, 12, 7, 14, 0, tzinfo=timezone.utc), "traceparent": "00-ab-cd-01"}
    data = {"services": {"ns/m": {"p_any": [0.25, 1e-9], "point": [3, None], "note": "ünï"}}, "n": 2}
    sent = to_binary_event(wire_form(CloudEvent(attributes=dict(attributes), data=data)))
    received = from_binary_event(sent)
    assert json.loads(sent.body) == data
    assert received.get_attributes() == CloudEvent(attributes=dict(attributes), data=data).get_attributes()
    text = CloudEvent(attributes={**attributes, "datacontenttype": "text/plain"}, data={"a": 1})
    assert wire_form(text) is text
    raw = CloudEvent(attributes=dict(attributes), data=b"{}")
    assert wire_form(raw) is raw
