"""Knative Function shim for the dead-letter sink (logic in package `deadletter`)."""

from __future__ import annotations

import logging
from typing import Any

from cloudevents.core.v1.event import CloudEvent

from fncommon import http_guard, json_log
from fncommon.cloudevent_io import Outcome, RetryLater, dispatch
from deadletter.sink import DeadLetterSink, SinkSettings

log = logging.getLogger("deadletter.function")


class DeadLetterFunction:
    def __init__(self) -> None:
        self._sink: DeadLetterSink | None = None
        self._reason = "not started"

    def start(self, cfg: dict[str, str]) -> None:
        json_log.configure("deadletter", cfg.get("LOG_LEVEL", "INFO"))
        http_guard.install(int(cfg.get("MAX_EVENT_BYTES") or http_guard.MAX_BYTES))
        try:
            self._sink = DeadLetterSink(SinkSettings.from_env(cfg))
        except ValueError as exc:
            self._reason = f"configuration error: {exc}"

    async def handle(self, scope: dict, receive: Any, send: Any) -> None:
        await dispatch(scope, send, self._keep if self._sink else None, self._reason, log)

    def _keep(self, event: CloudEvent) -> Outcome:
        if self._sink is not None and self._sink.keep(event) == 202:
            return Outcome(202)
        return Outcome.of(RetryLater("redis unavailable: the dead letter is not kept yet"))

    def ready(self) -> tuple[bool, str]:
        return (self._sink is not None), ("ready" if self._sink else self._reason)

    def alive(self) -> tuple[bool, str]:
        return True, "alive"

    def stop(self) -> None:
        if self._sink is not None:
            self._sink.close()


def new() -> DeadLetterFunction:
    return DeadLetterFunction()
