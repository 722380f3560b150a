"""MLflow's scoring server protocol, so that users of `mlflow models serve` can switch as is."""

from __future__ import annotations

from flask import Flask, Response, request

from .errors import BadRequest, UnsupportedMediaType
from .http_io import JSON, body_bytes, json_response, media_type, parse_json_object
from .model import ServedModel
from .tabular import Table, from_columns, from_csv, from_records, from_rows, from_split

CSV = "text/csv"
FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")

# error_code values MLflow's REST API uses, by status
ERROR_CODES = {
    400: "BAD_REQUEST",
    404: "ENDPOINT_NOT_FOUND",
    405: "BAD_REQUEST",
    413: "BAD_REQUEST",
    415: "BAD_REQUEST",
    503: "TEMPORARILY_UNAVAILABLE",
}


def error_body(status: int, message: str) -> dict:
    """MLflow clients read error_code and message; `error` keeps one key common to all paths."""
    return {"error_code": ERROR_CODES.get(status, "INTERNAL_ERROR"), "message": message, "error": message}


def register(app: Flask, model: ServedModel, server_version: str) -> None:
    @app.get("/ping")
    @app.get("/health")
    def ping() -> Response:
        model.require_ready()
        return Response("\n", status=200, mimetype="text/plain")

    @app.get("/version")
    def version() -> Response:
        return Response(server_version, status=200, mimetype="text/plain")

    @app.post("/invocations")
    def invocations() -> Response:
        model.require_ready()
        kind = media_type()
        if kind == CSV:
            rows, columns = from_csv(_text(body_bytes()))
        elif kind == JSON:
            rows, columns = parse_payload(parse_json_object(body_bytes()))
        else:
            raise UnsupportedMediaType(
                f"content type {request.mimetype or 'none'!r} is not supported: send {JSON} or {CSV}"
            )
        if columns is not None:
            order = model.arrange_columns(columns)
            if order is not None:
                rows = rows[:, order]
        (prediction,) = model.predict(rows)
        return json_response({"predictions": prediction.values.tolist()})


def parse_payload(doc: dict) -> Table:
    keys = [k for k in FORMATS if k in doc]
    unexpected = sorted(set(doc) - set(FORMATS) - {"params"})
    if len(keys) != 1 or unexpected:
        raise BadRequest(
            f"send a JSON object with exactly one of {', '.join(FORMATS)} (and optional params); "
            f"got {', '.join(sorted(doc)) or 'no fields'}"
        )
    if "params" in doc and not isinstance(doc["params"], dict):
        raise BadRequest("params must be an object")
    key = keys[0]
    payload = doc[key]
    if key == "dataframe_split":
        return from_split(payload, key)
    if key == "dataframe_records":
        return from_records(payload, key)
    if isinstance(payload, dict):
        return from_columns(payload, key)
    return from_rows(payload, key)


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("CSV body is not UTF-8 text") from None
