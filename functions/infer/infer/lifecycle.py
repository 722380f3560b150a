"""The process's own cold start: when it started, when it became ready, and which requests
arrived before that.

A server cannot see a request before it accepts it, and both servers (gunicorn, func-python's
hypercorn) open their port only once ready; in Knative the requests of a cold start wait in the
activator and the queue-proxy. So a request's arrival is taken from `X-Request-Start` when the
proxy that held it stamps one (the convention of Heroku, nginx and New Relic: `t=<epoch>` in
seconds, milliseconds or microseconds; Envoy/Istio add it with `request_headers_to_add`), and
a request that arrived before ready is observed in `infer_cold_start_wait_seconds` with the time
it waited for ready. The process start is the kernel's (/proc/self/stat), not this module's
import: interpreter start-up and imports are part of the cold start.
"""

from __future__ import annotations

import os
import time
from typing import Mapping

from . import metrics


def process_start_epoch() -> float:
    """When the kernel started this process (epoch seconds, 10 ms resolution): its age on the
    boot clock (/proc/uptime less its start tick) taken from now, since /proc/stat's btime is
    whole seconds and drifts from the wall clock. The module's import time where /proc is not."""
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        started_ticks = int(fields[19])  # field 22 (starttime), counted after the ")" of the command name
        with open("/proc/uptime", "rb") as f:
            uptime = float(f.read().split()[0])
        return time.time() - (uptime - started_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return _IMPORTED


_IMPORTED = time.time()
STARTED = process_start_epoch()
_ready_at: float | None = None


def mark_ready(now: float | None = None) -> float:
    """Record ready once (the first time): the gauge is the process's start-to-ready."""
    global _ready_at
    if _ready_at is None:
        _ready_at = time.time() if now is None else now
        metrics.START_TO_READY.set(max(0.0, _ready_at - STARTED))
    return _ready_at - STARTED


def ready_at() -> float | None:
    return _ready_at


def request_start(headers: Mapping[str, str]) -> float | None:
    """X-Request-Start as epoch seconds: `t=1700000000.123`, `t=1700000000123` (ms) or
    `t=1700000000123456` (us), with or without `t=`; None when absent or unreadable."""
    raw = headers.get("x-request-start")
    if not raw:
        return None
    raw = raw.strip().removeprefix("t=")
    try:
        value = float(raw)
    except ValueError:
        return None
    for scale in (1.0, 1e3, 1e6, 1e9):  # the magnitude says the unit (epoch seconds are ~1.7e9)
        if value / scale < 1e10:
            return value / scale
    return None


def observe_cold_start(headers: Mapping[str, str]) -> None:
    """A request whose proxy stamped an arrival before this process was ready waited for ready."""
    if _ready_at is None:
        return
    arrived = request_start(headers)
    if arrived is not None and STARTED - 3600 < arrived < _ready_at:
        metrics.COLD_START_WAIT.observe(_ready_at - arrived)
