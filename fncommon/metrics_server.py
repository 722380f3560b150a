"""The Prometheus endpoint of a CloudEvents function, on a port of its own (METRICS_PORT):
func-python's server sends every path but its probes through CloudEvent decoding, so `/metrics`
cannot be served beside `handle`. Unset, nothing is served (local runs and tests never fight
over a port). A port already taken is logged and the function carries on: its metrics are an
aid, never a reason to stop deciding.
"""

from __future__ import annotations

import logging
from typing import Mapping
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server

from . import json_log
from .env_settings import text, whole

log = logging.getLogger(__name__)


def serve(cfg: Mapping[str, str]) -> WSGIServer | None:
    """The running server (its `shutdown()` stops it), or None when none was started."""
    port = whole(cfg, "METRICS_PORT", 0, 0)
    if port == 0:
        return None
    address = text(cfg, "METRICS_ADDRESS", "0.0.0.0")
    try:
        server, _thread = start_http_server(port, address)
    except OSError as exc:
        json_log.event(log, "metrics server not started", logging.ERROR, port=port, reason=str(exc))
        return None
    json_log.event(log, "metrics served", port=port, address=address, path="/metrics")
    return server
