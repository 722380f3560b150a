"""Knative Function shim for the dead-letter sink (logic in package `deadletter`)."""

from __future__ import annotations

from typing import Any

from deadletter import http_guard, json_log
from deadletter.cloudevent_io import BadEvent, Outcome, RetryLater, respond
from deadletter.sink import DeadLetterSink, SinkSettings


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
        refused = http_guard.reason_refused(scope["event"])
        if refused is not None:
            await respond(send, Outcome.of(BadEvent(refused)))
        elif self._sink is None:
            await respond(send, Outcome.of(RetryLater(self._reason)))
        elif self._sink.keep(scope["event"]) == 202:
            await respond(send, Outcome(202))
        else:
            await respond(send, Outcome.of(RetryLater("redis unavailable: the dead letter is not kept yet")))

    def ready(self) -> tuple[bool, str]:
        return (self._sink is not None), ("ready" if self._sink else self._reason)

    def alive(self) -> tuple[bool, str]:
        return True, "alive"

    def stop(self) -> None:
        if self._sink is not None:
            self._sink.close()


def new() -> DeadLetterFunction:
    return DeadLetterFunction()
