"""Knative Function shim: func-python's CloudEvents middleware serves this object; the logic is
in package `scale` (scaler.py). Configuration is read once, in `start()`."""

from __future__ import annotations

import logging
from typing import Any
from wsgiref.simple_server import WSGIServer

from fncommon import http_guard, json_log, metrics_server
from fncommon.cloudevent_io import dispatch
from scale.settings import ScaleSettings

log = logging.getLogger("scale.function")


class ScaleFunction:
    def __init__(self) -> None:
        self._scaler: Any = None
        self._reason = "not started"
        self._metrics: WSGIServer | None = None

    def start(self, cfg: dict[str, str]) -> None:
        # func-python shows ready even when start() raises: refuse by recording, never by raising.
        json_log.configure("scale", cfg.get("LOG_LEVEL", "INFO"))
        http_guard.install(int(cfg.get("MAX_EVENT_BYTES") or http_guard.MAX_BYTES))
        self._metrics = metrics_server.serve(cfg)
        try:
            settings = ScaleSettings.from_env(cfg)
            from scale.scaler import Scaler

            self._scaler = Scaler(settings)
        except Exception as exc:  # configuration or client set-up: report through ready()
            self._reason = f"start failed: {type(exc).__name__}: {exc}"
            json_log.event(log, "start failed", logging.ERROR, reason=self._reason)
            return
        json_log.event(log, "started", dry_run=settings.dry_run, knative_version=settings.knative_version)

    async def handle(self, scope: dict, receive: Any, send: Any) -> None:
        await dispatch(scope, send, self._scaler.handle if self._scaler else None, self._reason, log)

    def ready(self) -> tuple[bool, str]:
        return (self._scaler is not None), ("ready" if self._scaler is not None else self._reason)

    def alive(self) -> tuple[bool, str]:
        return True, "alive"

    def stop(self) -> None:
        if self._scaler is not None:
            self._scaler.close()
        if self._metrics is not None:
            self._metrics.shutdown()


def new() -> ScaleFunction:
    return ScaleFunction()
