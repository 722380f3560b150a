"""The server's entry points: one data plane over the served model, carried by WSGI (the
standalone gunicorn server) or ASGI (func-python, what `func deploy` builds), with no bridge
between the two: each adapter only turns its server's request into a `Request` and back."""

from __future__ import annotations

from http import HTTPStatus
from typing import TYPE_CHECKING, Callable, Iterable

from .dataplane import DataPlane
from .http_io import Reply, Request
from .model import ModelRegistry, ServedModel
from .settings import InferSettings

if TYPE_CHECKING:
    from .pool import ModelPool

__version__ = "0.2.0"

# Below this size a request is answered on the event loop itself: decoding and predicting a
# small batch takes less time than handing it to a thread and back (make bench-infer). Larger
# bodies go to the default executor, so that one big batch does not stall every other request;
# so does a request that may wait for its model to load (the pool), so that no load stalls them.
INLINE_BODY_BYTES = 64 * 1024


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


class WsgiApp:
    def __init__(self, plane: DataPlane):
        self.plane = plane

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        if "CONTENT_TYPE" in environ:
            headers["content-type"] = environ["CONTENT_TYPE"]
        limit = self.plane.max_body_bytes
        request = Request(environ["REQUEST_METHOD"], environ.get("PATH_INFO", "") or "/", headers)
        length = environ.get("CONTENT_LENGTH") or ""
        stream = environ["wsgi.input"]
        if length.isdigit():
            if int(length) > limit:
                request.body_limit = limit
            elif int(length):
                request.raw_body = stream.read(int(length))
        elif environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked" or environ.get("wsgi.input_terminated"):
            raw = stream.read(limit + 1)
            if len(raw) > limit:
                request.body_limit = limit
            else:
                request.raw_body = raw
        reply = self.plane.handle(request)
        start_response(f"{reply.status} {_reason(reply.status)}", _headers(reply))
        return [b"" if request.method == "HEAD" else reply.body]


def _headers(reply: Reply) -> list[tuple[str, str]]:
    """Content-Length is the body's even for HEAD, which sends none (RFC 9110 9.3.2)."""
    return [("Content-Type", reply.content_type), ("Content-Length", str(len(reply.body))), *reply.headers]


class AsgiApp:
    def __init__(self, plane: DataPlane):
        self.plane = plane

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        request = Request(scope["method"], scope["path"], headers)
        limit = self.plane.max_body_bytes
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            request.body_limit = limit
        else:
            chunks, size, more = [], 0, True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    request.body_limit = limit
                    break
                chunks.append(chunk)
                more = message.get("more_body", False)
            if request.body_limit is None:
                request.raw_body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if len(request.raw_body) <= INLINE_BODY_BYTES and not self.plane.may_block(request):
            reply = self.plane.handle(request)
        else:
            import asyncio  # here: the WSGI server never needs it (0.1 s of its cold start)

            reply = await asyncio.get_running_loop().run_in_executor(None, self.plane.handle, request)
        await send({
            "type": "http.response.start",
            "status": reply.status,
            "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in _headers(reply)],
        })
        await send({"type": "http.response.body", "body": b"" if request.method == "HEAD" else reply.body})


def build_pool(settings: InferSettings) -> tuple[WsgiApp, "ModelPool"]:
    """The WSGI app over the model pool (MODEL_REPOSITORY); verifying the repository is the
    caller's step, as loading is for one model."""
    from .pool import ModelPool

    pool = ModelPool(settings)
    return WsgiApp(DataPlane(pool, __version__, max_body_bytes=settings.max_body_bytes)), pool


def start(settings: InferSettings) -> tuple[WsgiApp, ServedModel | "ModelPool"]:
    """Build for the configured mode and make it ready: load and warm the one model, or verify
    the pool's repository. A refusal keeps the server up, not ready, saying why (503)."""
    from . import lifecycle

    if settings.model_repository is not None:
        app, pool = build_pool(settings)
        if pool.verify():
            lifecycle.mark_ready()
        return app, pool
    app, model = build(settings)
    if model.load():
        lifecycle.mark_ready()
    return app, model


def build(settings: InferSettings) -> tuple[WsgiApp, ServedModel]:
    """The WSGI app for the configured model; loading the model is the caller's step (see
    `infer.serve` and the function shim), so that the app can answer 503 while it loads."""
    model = ServedModel(settings)
    plane = DataPlane(ModelRegistry([model]), __version__, max_body_bytes=settings.max_body_bytes)
    return WsgiApp(plane), model
