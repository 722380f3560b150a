"""KServe V1 (TensorFlow-Serving style) REST endpoints: `instances` in, `predictions` out."""

from __future__ import annotations

from flask import Flask, Response

from .errors import BadRequest, ModelNotFound
from .http_io import body_json, json_response
from .model import ServedModel
from .tabular import from_rows


def register(app: Flask, model: ServedModel) -> None:
    def check_model(name: str) -> None:
        if name != model.name:
            raise ModelNotFound(f"model {name!r} is not served here; this server serves {model.name!r}")

    @app.get("/v1/models")
    def list_models() -> Response:
        return json_response({"models": [model.name]})

    @app.get("/v1/models/<name>")
    def model_status(name: str) -> Response:
        check_model(name)
        model.require_ready()
        return json_response({"name": model.name, "ready": True})

    @app.post("/v1/models/<name>:predict")
    def predict(name: str) -> Response:
        check_model(name)
        model.require_ready()
        doc = body_json()
        keys = [k for k in ("instances", "inputs") if k in doc]
        if len(keys) != 1:
            raise BadRequest('send exactly one of "instances" (a list of rows or records) or "inputs"')
        rows, columns = from_rows(doc[keys[0]], keys[0])
        if columns is not None:
            order = model.arrange_columns(columns)
            if order is not None:
                rows = rows[:, order]
        (prediction,) = model.predict(rows)
        return json_response({"predictions": prediction.values.tolist()})
