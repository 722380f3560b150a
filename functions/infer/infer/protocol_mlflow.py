"""MLflow's scoring server protocol, so that users of `mlflow models serve` can switch as is."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .dataplane import Protocol, Route
from .errors import BadRequest, UnsupportedMediaType
from .http_io import JSON, Reply, Request, json_reply, parse_json_object, text_reply
from .tabular import Table, from_columns, from_csv, from_records, from_rows, from_split

if TYPE_CHECKING:
    from .dataplane import DataPlane

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


def error_body(request: Request, status: int, message: str) -> dict:
    """MLflow clients read error_code and message; `error` keeps one key common to all paths."""
    return {"error_code": ERROR_CODES.get(status, "INTERNAL_ERROR"), "message": message, "error": message}


def ping(plane: DataPlane, request: Request) -> Reply:
    plane.models.require_ready()
    return Reply(200, b"\n", "text/plain; charset=utf-8")


def version(plane: DataPlane, request: Request) -> Reply:
    return text_reply(plane.server_version)


def invocations(plane: DataPlane, request: Request) -> Reply:
    model = plane.models.choose(request)  # MLflow's protocol names no model: the registry picks it
    model.require_ready()
    kind = request.media_type
    if kind == CSV:
        rows, columns = from_csv(request.body)
    elif kind == JSON:
        rows, columns = parse_payload(parse_json_object(request.body))
    else:
        raise UnsupportedMediaType(
            f"content type {request.media_type or 'none'!r} is not supported: send {JSON} or {CSV}"
        )
    (prediction,) = plane.predict(model, columns, rows, ("predict",))
    return json_reply({"predictions": prediction.values.tolist()})


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


PROTOCOL = Protocol(
    name="mlflow",
    prefixes=("/invocations", "/version"),
    error_body=error_body,
    routes=[
        Route("GET", "/ping", ping, traffic=False),
        Route("GET", "/health", ping, traffic=False),
        Route("GET", "/version", version),
        Route("POST", "/invocations", invocations),
    ],
)
