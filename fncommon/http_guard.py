"""Limits on what a request may make this function hold, before func-python decodes it.

func-python 0.8 reads the whole body into memory before the function sees anything (a 48 MiB
body took 5.6 s and 186 MB before its 400), and a JSON nested deeper than Python's recursion
limit raises RecursionError inside the CloudEvents SDK, which func-python answers 500 (retried by
the broker) instead of 400. Neither can be set on func-python itself, so `install()` wraps its
decoder: a body over `max_bytes` (from Content-Length, or counted while reading) is refused
after at most `max_bytes` are read, and nesting deeper than `max_depth` is refused. A refused
request reaches `handle()` as an event of type REFUSED_TYPE whose data says why, and the
function answers it 400 like any bad event. The first line of defence stays the trust boundary:
the control-plane functions are cluster-local and only the Broker may reach them.
"""

from __future__ import annotations

import json
from typing import Any

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings.http import HTTPMessage, from_http_event
from cloudevents.core.v1.event import CloudEvent

REFUSED_TYPE = "io.predictive-scaling.request-refused"
MAX_BYTES = 32 * 1024 * 1024
"""Default MAX_EVENT_BYTES: a forecast event for 10,000 services is about 6.5 MiB."""
MAX_DEPTH = 64


class Refused(ValueError):
    pass


def refused(reason: str) -> CloudEvent:
    return CloudEvent(attributes={"type": REFUSED_TYPE, "source": "/predictive-scaling/http-guard", "id": "refused"},
                      data={"error": reason})


def reason_refused(event: BaseCloudEvent) -> str | None:
    """Why the guard refused this request, or None for a real event."""
    if event.get_type() != REFUSED_TYPE:
        return None
    data = event.get_data()
    return str(data.get("error")) if isinstance(data, dict) else "request refused"


async def _read(scope: dict, receive: Any, max_bytes: int) -> bytes:
    headers = dict(scope.get("headers") or [])
    declared = headers.get(b"content-length", b"").decode() or "0"
    if declared.isdigit() and int(declared) > max_bytes:
        raise Refused(f"body of {int(declared)} bytes is over the limit of {max_bytes}")
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise Refused(f"body is over the limit of {max_bytes} bytes")
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of parsed JSON, iteratively (no recursion to exhaust), stopping past `limit`."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def install(max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> None:
    import func_python.cloudevent as middleware

    async def decode_event(scope: dict, receive: Any) -> BaseCloudEvent:
        try:
            body = await _read(scope, receive, max_bytes)
            headers = {k.decode("utf-8").lower(): v.decode("utf-8") for k, v in scope.get("headers", [])}
            event = from_http_event(HTTPMessage(headers=headers, body=body))
            data = event.get_data()
            if isinstance(data, (bytes, bytearray)) and headers.get("content-type", "").startswith("application/json"):
                data = json.loads(data)
            if _depth(data, max_depth) > max_depth:
                raise Refused(f"JSON nested deeper than {max_depth} levels")
            return event
        except Refused as exc:
            return refused(str(exc))
        except RecursionError:
            return refused(f"JSON nested deeper than {max_depth} levels")

    middleware.decode_event = decode_event
