"""The Flask application: three protocols over one served model, errors rendered in one place."""

from __future__ import annotations

import logging
import uuid

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from . import metrics, protocol_mlflow, protocol_v1, protocol_v2
from .errors import InferError, ModelNotReady
from .http_io import json_response
from .model import ServedModel
from .settings import InferSettings

__version__ = "0.1.0"

log = logging.getLogger("infer.app")


def create_app(model: ServedModel) -> Flask:
    """The WSGI app for `model`; loading the model is the caller's step (see `infer.serve` and
    the function shim), so that the app can answer 503 while it loads."""
    app = Flask("infer")
    app.config["MAX_CONTENT_LENGTH"] = model.settings.max_body_bytes

    protocol_v2.register(app, model, __version__)
    protocol_v1.register(app, model)
    protocol_mlflow.register(app, model, __version__)

    @app.get("/metrics")
    def scrape() -> Response:
        body, content_type = metrics.render()
        return Response(body, status=200, content_type=content_type)

    @app.errorhandler(InferError)
    def on_infer_error(exc: InferError) -> Response:
        headers = {}
        if isinstance(exc, ModelNotReady):
            headers["Retry-After"] = str(exc.retry_after_s)
        log.info(
            "request refused",
            extra={"status": exc.status, "path": request.path, "reason": exc.message, "request_id": _request_id()},
        )
        return error_response(exc.status, exc.message, headers)

    @app.errorhandler(HTTPException)
    def on_http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        message = {
            404: f"no endpoint {request.path!r}",
            405: f"method {request.method} is not allowed on {request.path!r}",
            413: f"request body is over the limit of {app.config['MAX_CONTENT_LENGTH']} bytes",
        }.get(status, exc.description or exc.name)
        return error_response(status, message)

    @app.errorhandler(Exception)
    def on_unexpected(exc: Exception) -> Response:
        request_id = _request_id()
        log.exception("unexpected error", extra={"path": request.path, "request_id": request_id})
        return error_response(500, f"internal error (request id {request_id})")

    app.wsgi_app = metrics.MetricsMiddleware(app.wsgi_app, lambda: model.name)  # type: ignore[method-assign]
    return app


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    body = protocol_mlflow.error_body(status, message) if request.path == "/invocations" else {"error": message}
    if request.path == "/v2/health/ready" or request.path.endswith("/ready"):
        body["ready"] = False
    return json_response(body, status, headers)


def _request_id() -> str:
    return request.headers.get("X-Request-Id") or uuid.uuid4().hex


def build(settings: InferSettings) -> tuple[Flask, ServedModel]:
    model = ServedModel(settings)
    return create_app(model), model
