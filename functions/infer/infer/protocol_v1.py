"""KServe V1 (TensorFlow-Serving style) REST endpoints: `instances` in, `predictions` out."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .dataplane import Protocol, Route
from .errors import BadRequest
from .http_io import Reply, Request, body_json, json_reply
from .tabular import from_rows

if TYPE_CHECKING:
    from .dataplane import DataPlane


def list_models(plane: DataPlane, request: Request) -> Reply:
    return json_reply({"models": [request.bound] if request.bound else plane.models.names})


def model_status(plane: DataPlane, request: Request) -> Reply:
    model = plane.models.peek(request.params["name"])  # never loads: says whether it is loaded
    model.require_ready()
    return json_reply({"name": model.name, "ready": True})


def predict(plane: DataPlane, request: Request) -> Reply:
    model = plane.models.get(request.params["name"])
    model.require_ready()
    doc = body_json(request)
    keys = [k for k in ("instances", "inputs") if k in doc]
    if len(keys) != 1:
        raise BadRequest('send exactly one of "instances" (a list of rows or records) or "inputs"')
    rows, columns = from_rows(doc[keys[0]], keys[0])
    (prediction,) = plane.predict(model, columns, rows, ("predict",))
    return json_reply({"predictions": prediction.values.tolist()})


PROTOCOL = Protocol(
    name="v1",
    prefixes=("/v1",),
    routes=[
        Route("GET", "/v1/models", list_models),
        Route("POST", "/v1/models/{name}:predict", predict),
        Route("GET", "/v1/models/{name}", model_status),
    ],
)
