"""Knative Function shim: func-python's CloudEvents middleware serves this object; the logic is
in package `forecast` (tick.py). Configuration is read once, in `start()`."""

from __future__ import annotations

import logging
from typing import Any
from wsgiref.simple_server import WSGIServer

from fncommon import http_guard, json_log, metrics_server
from fncommon.cloudevent_io import dispatch
from forecast.settings import ForecastSettings, SettingsError
from forecast.tick import TickHandler

log = logging.getLogger("forecast.function")


class ForecastFunction:
    def __init__(self) -> None:
        self._tick: TickHandler | None = None
        self._reason = "not started"
        self._metrics: WSGIServer | None = None

    def start(self, cfg: dict[str, str]) -> None:
        # func-python shows ready even when start() raises: refuse by recording, never by raising.
        json_log.configure("forecast", cfg.get("LOG_LEVEL", "INFO"))
        http_guard.install(int(cfg.get("MAX_EVENT_BYTES") or http_guard.MAX_BYTES))
        self._metrics = metrics_server.serve(cfg)
        try:
            self._tick = TickHandler(ForecastSettings.from_env(cfg))
        except SettingsError as exc:
            self._reason = f"configuration error: {exc}"
            json_log.event(log, "configuration error", logging.ERROR, reason=str(exc))
            return
        ready, why = self._tick.ready()
        json_log.event(log, "started", ready=ready, reason=why)

    async def handle(self, scope: dict, receive: Any, send: Any) -> None:
        await dispatch(scope, send, self._tick.handle if self._tick else None, self._reason, log)

    def ready(self) -> tuple[bool, str]:
        if self._tick is None:
            return False, self._reason
        return self._tick.ready()

    def alive(self) -> tuple[bool, str]:
        return True, "alive"

    def stop(self) -> None:
        if self._tick is not None:
            self._tick.close()
        if self._metrics is not None:
            self._metrics.shutdown()


def new() -> ForecastFunction:
    return ForecastFunction()
