"""The server's entry points: one data plane over the served model, carried by WSGI (the
standalone gunicorn server) or ASGI (func-python, what `func deploy` builds), with no bridge
between the two: each adapter only turns its server's request into a `Request` and back."""

from __future__ import annotations

import time
from http import HTTPStatus
from typing import TYPE_CHECKING, Callable, Iterable

from .admission import ON_EVENT_LOOP, Admission
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
        chunked = environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked" or environ.get("wsgi.input_terminated")
        expected = int(length) if length.isdigit() else limit if chunked else 0
        cost = 0
        if expected > limit:
            request.body_limit = limit
        elif expected:
            cost = _admit_blocking(self.plane.admission, request, expected, headers)
            if request.refused is None and length.isdigit():
                request.raw_body = stream.read(expected)
            elif request.refused is None:
                raw = stream.read(limit + 1)
                if len(raw) > limit:
                    request.body_limit = limit
                else:
                    request.raw_body = raw
        if cost and request.refused is None and request.body_limit is None:
            cost = _admit_decoding_blocking(self.plane.admission, request, cost, headers)
        try:
            reply = self.plane.handle(request)
        finally:
            if cost:
                self.plane.admission.release(cost)
        start_response(f"{reply.status} {_reason(reply.status)}", _headers(reply))
        return [b"" if request.method == "HEAD" else reply.body]


def _admissible_cost(admission: Admission | None, request: Request, expected: int, headers: dict) -> int:
    """What the body's decoding would hold, or 0 when nothing is to be reserved: no admission,
    or a body that can never fit (`request.refused` set)."""
    if admission is None:
        return 0
    cost = admission.cost(expected, headers)
    request.refused = admission.check(cost, expected, headers)
    return 0 if request.refused is not None else cost


def _admit_blocking(admission: Admission | None, request: Request, expected: int, headers: dict) -> int:
    """Reserve the body's reading memory (waiting a little); the cost held, or 0 with
    `request.refused` set."""
    cost = _admissible_cost(admission, request, expected, headers)
    if not cost or admission is None:
        return 0
    if not admission.acquire(cost):
        request.refused = admission.busy()
        return 0
    return cost


async def _admit(admission: Admission | None, request: Request, expected: int, headers: dict) -> int:
    """As `_admit_blocking`, without blocking the event loop."""
    cost = _admissible_cost(admission, request, expected, headers)
    if not cost or admission is None:
        return 0
    if not await _acquire_polling(admission, cost):
        request.refused = admission.busy()
        return 0
    return cost


async def _acquire_polling(admission: Admission, cost: int) -> bool:
    """`acquire` for the event loop: tried at once, then every 10 ms up to the admission's wait."""
    if admission.try_acquire(cost):
        return True
    import asyncio

    deadline = time.monotonic() + admission.wait_s
    while time.monotonic() < deadline:
        await asyncio.sleep(0.01)
        if admission.try_acquire(cost):
            return True
    return False


def _whole_cost(admission: Admission, request: Request, held: int, headers: dict) -> int:
    """Once the body is read: what answering it may hold (decoding it, then predicting its
    elements; a body read without a declared length may need less than was held for reading
    it); `request.refused` set when it can never fit."""
    body = request.raw_body
    prepaid = admission.predict_bound(body, headers)
    need = admission.decoding_cost(body, headers) + prepaid
    request.refused = admission.check(need, len(body), headers)
    request.predict_reserved = prepaid
    return need


def _admit_decoding_blocking(admission: Admission, request: Request, held: int, headers: dict) -> int:
    """Grow the reading reservation to the whole cost in one step (never waiting while holding
    part of it); the cost held, or 0 with `request.refused` set and nothing held."""
    need = _whole_cost(admission, request, held, headers)
    if request.refused is not None:
        admission.release(held)
        return 0
    if admission.grow(held, need):
        return need
    request.refused = admission.busy()
    return 0


async def _admit_decoding(admission: Admission, request: Request, held: int, headers: dict) -> int:
    need = _whole_cost(admission, request, held, headers)
    if request.refused is not None:
        admission.release(held)
        return 0
    if admission.try_grow(held, need):
        return need
    admission.release(held)
    if await _acquire_polling(admission, need):
        return need
    request.refused = admission.busy()
    return 0


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
        cost = 0
        if declared.isdigit() and int(declared) > limit:
            request.body_limit = limit
        else:
            expected = int(declared) if declared.isdigit() else 0 if scope["method"] in ("GET", "HEAD") else limit
            if expected:
                cost = await _admit(self.plane.admission, request, expected, headers)
            if request.refused is None:  # refused: its body is not read, the data plane answers 503 or 413
                chunks, size, more = [], 0, True
                while more:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        if cost:
                            self.plane.admission.release(cost)
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
                    if cost:
                        cost = await _admit_decoding(self.plane.admission, request, cost, headers)
        try:
            if len(request.raw_body) <= INLINE_BODY_BYTES and not self.plane.may_block(request):
                inline = ON_EVENT_LOOP.set(True)
                try:
                    reply = self.plane.handle(request)
                finally:
                    ON_EVENT_LOOP.reset(inline)
            else:
                import asyncio  # here: the WSGI server never needs it (0.1 s of its cold start)

                reply = await asyncio.get_running_loop().run_in_executor(None, self.plane.handle, request)
        finally:
            if cost:
                self.plane.admission.release(cost)
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
    return WsgiApp(DataPlane(pool, __version__, max_body_bytes=settings.max_body_bytes,
                             admission=admission_for(settings))), pool


def admission_for(settings: InferSettings) -> Admission:
    return Admission(int(settings.request_memory_mb * 2**20), settings.retry_after_s)


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
    plane = DataPlane(ModelRegistry([model]), __version__, max_body_bytes=settings.max_body_bytes,
                      admission=admission_for(settings))
    return WsgiApp(plane), model
