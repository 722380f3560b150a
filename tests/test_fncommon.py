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
