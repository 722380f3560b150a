"""Knative Function shim: func-python serves this object; the logic lives in package `infer`.

func-python answers /health/liveness and /health/readiness itself from `alive()` and `ready()`;
every other path goes to the ASGI adapter of the same data plane the standalone server runs
(no WSGI bridge, no thread hop for small requests).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fncommon import json_log
from infer.app import AsgiApp, start
from infer.settings import InferSettings, SettingsError

log = logging.getLogger("infer.function")


class InferFunction:
    def __init__(self) -> None:
        self._asgi: Any = None
        self._model: Any = None
        """The one ServedModel (MODEL_PATH) or the ModelPool (MODEL_REPOSITORY): both say
        `ready` and `reason`."""
        self._reason = "not started"

    def start(self, cfg: dict[str, str]) -> None:
        """Load and warm the model (or verify the pool's repository) before the first request;
        func-python reports ready only through `ready()`, so a refusal here must not raise (a
        raise would still show ready)."""
        json_log.configure("infer", cfg.get("LOG_LEVEL", "INFO"))
        try:
            settings = InferSettings.from_env(cfg)
        except SettingsError as exc:
            self._reason = f"configuration error: {exc}"
            json_log.event(log, "configuration error", logging.ERROR, reason=str(exc))
            return
        app, self._model = start(settings)
        if hasattr(self._model, "start_background"):  # the pool: its repository poll and control port
            try:
                self._model.start_background()
            except OSError as exc:  # the control port is taken: serve, and say why the API is missing
                json_log.event(log, "control plane not started", logging.ERROR, reason=str(exc))
        self._asgi = AsgiApp(app.plane)

    async def handle(self, scope: dict, receive: Any, send: Any) -> None:
        if self._asgi is None:
            body = json.dumps({"error": self._reason}).encode()
            await send({"type": "http.response.start", "status": 503,
                        "headers": [(b"content-type", b"application/json"), (b"retry-after", b"1")]})
            await send({"type": "http.response.body", "body": body})
            return
        await self._asgi(scope, receive, send)

    def ready(self) -> tuple[bool, str]:
        if self._model is None:
            return False, self._reason
        return self._model.ready, self._model.reason

    def alive(self) -> tuple[bool, str]:
        return True, "alive"

    def stop(self) -> None:
        """The pool's background threads and control port; models are only memory."""
        if hasattr(self._model, "stop_background"):
            self._model.stop_background()


def new() -> InferFunction:
    return InferFunction()
