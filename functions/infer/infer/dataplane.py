"""The data plane: every request, whatever server carried it, goes through `DataPlane.handle`:
route -> the protocol's handler (decode -> look the model up by name -> `predict` -> encode)
-> a Reply; errors are rendered here, once, in the body shape of the protocol that owns the
path, and every client request is counted here, once.

A protocol is a module `protocol_<name>.py` with a `PROTOCOL` object (its name, which is also
its metrics label, its routes and its error body); it is found by its file name, so adding a
protocol touches that one file.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import re
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from fncommon import json_log

from . import lifecycle, metrics
from .admission import PREDICT_SLICE_ELEMENTS, PREPAID
from .errors import InferError, MethodNotAllowed, ModelNotFound, NotFound, headers_of
from .http_io import Reply, Request, json_reply
from .model import Prediction, ServedModel
from .registry import Registry

log = logging.getLogger("infer.app")

Handler = Callable[["DataPlane", Request], Reply]


def plain_error_body(request: Request, status: int, message: str) -> dict:
    return {"error": message}


def predict_in_slices(model: ServedModel, rows: np.ndarray, outputs: Sequence[str], elements: int) -> list[Prediction]:
    """The model's predictions for `rows`, at most `elements` input values at a time, written
    into outputs allocated once: what the runtime allocates while predicting is bounded by the
    slice, not the batch (a 10 MiB CSV body of 5 M values made it take ~170 MB at once)."""
    step = max(1, elements // rows.shape[1]) if rows.ndim == 2 and rows.shape[1] else 0
    if not step or rows.shape[0] <= step:
        return model.predict(rows, outputs)
    first = model.predict(rows[:step], outputs)
    if not all(isinstance(p.values, np.ndarray) and p.values.ndim and p.values.shape[0] == step for p in first):
        return model.predict(rows, outputs)  # an output that is not one value per row: whole
    whole = [Prediction(p.name, np.empty((rows.shape[0], *p.values.shape[1:]), dtype=p.values.dtype)) for p in first]
    for p, out in zip(first, whole):
        out.values[:step] = p.values
    del first
    for start in range(step, rows.shape[0], step):
        for p, out in zip(model.predict(rows[start:start + step], outputs), whole):
            out.values[start:start + step] = p.values
    return whole


@dataclass(frozen=True)
class Route:
    method: str
    pattern: str
    """A path with {param} segments, e.g. /v2/models/{name}/infer."""
    handler: Handler
    traffic: bool = True
    """False for probes and scrapes: the forecast function reads the request counter as the
    Service's traffic, so they must not count."""
    control: bool = False
    """The control plane's (the pool's model repository API): served on the control port only
    (`DataPlane.control`), never where tenants' requests arrive."""

    def compile(self) -> re.Pattern:
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+?)", re.escape(self.pattern).replace(r"\{", "{").replace(r"\}", "}"))
        return re.compile(f"^{regex}$")


@dataclass(frozen=True)
class Protocol:
    name: str
    routes: Sequence[Route]
    prefixes: tuple[str, ...] = ()
    """Paths under these prefixes belong to this protocol even when no route matches (their
    404s and 405s are counted under its label and rendered in its error body)."""
    error_body: Callable[[Request, int, str], dict] = plain_error_body


@dataclass
class _Compiled:
    route: Route
    protocol: Protocol
    regex: re.Pattern


# Paths that are never traffic, matched or not: probes of every server kind and scrapes.
NOT_TRAFFIC = frozenset({"/health/liveness", "/health/readiness", "/healthz"})
# Served on the control port besides the control routes (its own probes).
CONTROL_PROBES = frozenset({"/v2/health/live", "/v2/health/ready"})
CONTROL_PREFIX = "/v2/repository"


def discover_protocols() -> list[Protocol]:
    package = __name__.rsplit(".", 1)[0]
    found = []
    for info in sorted(pkgutil.iter_modules(importlib.import_module(package).__path__), key=lambda i: i.name):
        if info.name.startswith("protocol_"):
            found.append(importlib.import_module(f"{package}.{info.name}").PROTOCOL)
    return found


@dataclass
class DataPlane:
    models: Registry
    """The one model (`ModelRegistry`) or the pool (`ModelPool`): the plane never asks which."""
    server_version: str
    protocols: Sequence[Protocol] = field(default_factory=discover_protocols)
    max_body_bytes: int = 10 * 1024 * 1024
    control: bool = False
    """The control plane's port: only the control routes (and probes). Otherwise every route
    but those: the serving port answers the repository API's paths with 404."""
    admission: Any = None
    """`infer.admission.Admission` (the adapters reserve each request's decoding memory)."""

    def __post_init__(self) -> None:
        def served(route: Route) -> bool:
            return route.control or route.pattern in CONTROL_PROBES if self.control else not route.control

        self._routes = [_Compiled(r, p, r.compile()) for p in self.protocols for r in p.routes if served(r)]
        # Exact paths first: the common routes cost one dict lookup, not a regex scan.
        self._exact: dict[tuple[str, str], _Compiled] = {
            (c.route.method, c.route.pattern): c for c in self._routes if "{" not in c.route.pattern
        }
        # A probe path is not traffic whatever the method (a POST to it is a 405, not a request).
        self._not_traffic = NOT_TRAFFIC | {
            c.route.pattern for c in self._routes if not c.route.traffic and "{" not in c.route.pattern
        }

    # -- the one predict every protocol calls ------------------------------------------------
    def predict(
        self, model: ServedModel, columns: Sequence[str] | None, rows: np.ndarray, outputs: Sequence[str]
    ) -> list[Prediction]:
        """Named columns are put in the order the model was fitted on, then the model predicts
        exactly `outputs`."""
        if columns is not None:
            order = model.arrange_columns(columns)
            if order is not None:
                rows = rows[:, order]
        if self.admission is None:
            return model.predict(rows, outputs)
        cost = self.admission.predict_cost(rows)  # what the runtime allocates, beside the decoding
        taken = self.admission.hold(cost, f"a batch of {rows.shape[0]} rows")
        try:
            return predict_in_slices(model, rows, outputs, PREDICT_SLICE_ELEMENTS)
        finally:
            self.admission.release(taken)

    # -- requests ----------------------------------------------------------------------------
    def may_block(self, request: Request) -> bool:
        """Whether answering may wait for a model to load (the pool's first request for a
        model): the ASGI adapter then answers it off the event loop. Free for one model."""
        if not self.models.loads_on_demand:
            return False
        self._routed(request)  # fills request.params; handle() reuses the match
        return self.models.may_block(request.params.get("name") or self.models.route_name(request))

    def handle(self, request: Request) -> Reply:
        prepaid = PREPAID.set(request.predict_reserved)
        try:
            return self._handle(request)
        finally:
            PREPAID.reset(prepaid)

    def _handle(self, request: Request) -> Reply:
        compiled, allowed = self._routed(request)
        protocol = compiled.protocol if compiled else self._owner(request.path)
        traffic = (compiled.route.traffic if compiled else True) and request.path not in self._not_traffic
        refused = None
        try:
            request.bound = None if self.control else self.models.boundary(request.headers)
        except InferError as exc:
            refused = exc
        if not traffic:
            if request.bound is not None and request.path == "/metrics":  # a tenant sees no other model's series
                refused = NotFound(f"no endpoint {request.path!r} on a model's host")
            elif compiled is not None:
                refused = None  # probes answer on every host
            return self._dispatch(request, compiled, allowed, protocol, refused)
        if request.bound is not None:
            label = self.models.label(request.bound)
        elif refused is not None:
            label = self.models.label(None)
        else:
            label = self.models.label(request.params.get("name") or self.models.route_name(request))
        lifecycle.observe_cold_start(request.headers)
        protocol_label = protocol.name if protocol else "other"
        in_flight = metrics.in_flight_series(label)
        in_flight.inc()
        started = time.perf_counter()
        status = 500
        try:
            reply = self._dispatch(request, compiled, allowed, protocol, refused)
            status = reply.status
            return reply
        finally:
            metrics.latency_series(label, protocol_label).observe(time.perf_counter() - started)
            metrics.request_series(label, protocol_label, str(status)).inc()
            in_flight.dec()

    def _dispatch(
        self, request: Request, compiled: _Compiled | None, allowed: tuple[str, ...], protocol: Protocol | None,
        refused: InferError | None = None,
    ) -> Reply:
        try:
            if compiled is None:
                if allowed:
                    raise MethodNotAllowed(f"method {request.method[:20]} is not allowed on {request.path[:200]!r}", allowed)
                if not self.control and request.path.startswith(CONTROL_PREFIX):
                    raise NotFound("the model repository API is the control plane's (a pool's, MODEL_REPOSITORY, on its "
                                   "POOL_CONTROL_PORT): it is not served on this port")
                raise NotFound(f"no endpoint {request.path[:200]!r}")
            if refused is not None:
                raise refused
            named = request.params.get("name")
            if request.bound is not None and named is not None and named != request.bound:
                raise ModelNotFound(f"model {named[:80]!r} is not served on this host")
            return compiled.route.handler(self, request)
        except InferError as exc:
            # A refusal kept on the request (request.refused, raised here) would hold its traceback,
            # whose frames hold the request and its body: a cycle only the cyclic collector frees,
            # so refused 10 MiB bodies piled up between collections (measured: 8 clients looping
            # the largest binary body took the pool from 46 to 897 MiB). Dropped once answered.
            exc.__traceback__ = None
            if type(exc) not in (NotFound, MethodNotAllowed):
                json_log.event(log, "request refused", status=exc.status, path=request.path, reason=exc.message,
                               request_id=request.request_id or uuid.uuid4().hex)
            return self.error(request, protocol, exc.status, exc.message, headers_of(exc))
        except Exception:
            request_id = request.request_id or uuid.uuid4().hex
            json_log.event(log, "unexpected error", logging.ERROR, path=request.path, request_id=request_id,
                           traceback=traceback.format_exc())
            return self.error(request, protocol, 500, f"internal error (request id {request_id})")

    def error(
        self, request: Request, protocol: Protocol | None, status: int, message: str,
        headers: list[tuple[str, str]] | None = None,
    ) -> Reply:
        body = (protocol.error_body if protocol else plain_error_body)(request, status, message)
        return json_reply(body, status, headers)

    def _routed(self, request: Request) -> tuple[_Compiled | None, tuple[str, ...]]:
        """The request's route (and, unmatched, the methods its path allows), matched once."""
        if request.route is None:
            request.route = self._match(request)
        return request.route

    def _match(self, request: Request) -> tuple[_Compiled | None, tuple[str, ...]]:
        method = "GET" if request.method == "HEAD" else request.method
        path = request.path
        if len(path) > 1 and path.endswith("/"):  # /v2/ is /v2: its 405s say what it allows
            path = path.rstrip("/") or "/"
        exact = self._exact.get((method, path))
        if exact is not None:
            return exact, ()
        allowed: list[str] = []
        for compiled in self._routes:
            found = compiled.regex.match(path)
            if found is None:
                continue
            if compiled.route.method == method:
                request.params = found.groupdict()
                return compiled, ()
            allowed.append(compiled.route.method)
        if "GET" in allowed:
            allowed.append("HEAD")
        return None, tuple(dict.fromkeys(allowed))

    def _owner(self, path: str) -> Protocol | None:
        for protocol in self.protocols:
            if any(path == p or path.startswith(p) for p in protocol.prefixes):
                return protocol
        return None
