"""Knative Function shim for the dead-letter sink (logic in package `deadletter`)."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from deadletter import http_guard
from deadletter.sink import DeadLetterSink, SinkSettings


class DeadLetterFunction:
    def __init__(self) -> None:
        self._sink: DeadLetterSink | None = None
        self._reason = "not started"

    def start(self, cfg: dict[str, str]) -> None:
        logging.getLogger("deadletter").addHandler(logging.StreamHandler(sys.stdout))
        http_guard.install(int(cfg.get("MAX_EVENT_BYTES") or http_guard.MAX_BYTES))
        try:
            self._sink = DeadLetterSink(SinkSettings.from_env(cfg))
        except ValueError as exc:
            self._reason = f"configuration error: {exc}"

    async def handle(self, scope: dict, receive: Any, send: Any) -> None:
        refused = http_guard.reason_refused(scope["event"])
        body = b""
        if refused is not None:
            status, body = 400, json.dumps({"error": refused}).encode()
        else:
            status = self._sink.keep(scope["event"]) if self._sink else 503
        headers = [(b"content-length", str(len(body)).encode())] + ([(b"retry-after", b"5")] if status == 503 else [])
        if body:
            headers.append((b"content-type", b"application/json"))
        await send.http({"type": "http.response.start", "status": status, "headers": headers})
        await send.http({"type": "http.response.body", "body": body})

    def ready(self) -> tuple[bool, str]:
        return (self._sink is not None), ("ready" if self._sink else self._reason)

    def alive(self) -> tuple[bool, str]:
        return True, "alive"


def new() -> DeadLetterFunction:
    return DeadLetterFunction()
