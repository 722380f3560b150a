"""Reading request bodies and writing JSON responses, shared by the three protocols."""

from __future__ import annotations

from typing import Any

import orjson
from flask import Response, request
from werkzeug.exceptions import RequestEntityTooLarge

from .errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

JSON = "application/json"
# curl -d without -H sends form-urlencoded; KServe's own docs curl that way, so accept it as JSON.
JSON_LIKE = frozenset({JSON, "", "application/x-www-form-urlencoded"})


def media_type() -> str:
    return (request.mimetype or "").lower()


def body_bytes() -> bytes:
    try:
        return request.get_data(cache=True)
    except RequestEntityTooLarge:
        raise PayloadTooLarge(f"request body is over the limit of {request.max_content_length} bytes") from None


def body_json(allowed: frozenset[str] = JSON_LIKE) -> dict:
    """The request's JSON object, or a 4xx saying why there is none."""
    if media_type() not in allowed:
        raise UnsupportedMediaType(f"content type {request.mimetype!r} is not supported: send {JSON}")
    return parse_json_object(body_bytes())


def parse_json_object(raw: bytes) -> dict:
    if not raw:
        raise BadRequest("request body is empty: send a JSON object")
    try:
        doc = orjson.loads(raw)  # 10x faster than json on a 100-row tensor (make bench-infer)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadRequest(f"request body must be a JSON object, not {type(doc).__name__}")
    return doc


def json_response(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    response = Response(orjson.dumps(doc), status=status, mimetype=JSON)
    if headers:
        response.headers.update(headers)
    return response
