"""Open Inference Protocol (KServe V2) REST endpoints over the served model."""

from __future__ import annotations

from typing import Any

import numpy as np
from flask import Flask, Response

from . import tensors
from .errors import BadRequest, ModelNotFound
from .http_io import body_json, json_response
from .model import ServedModel

SERVER_NAME = "predictive-infer"


def register(app: Flask, model: ServedModel, server_version: str) -> None:
    def check_model(name: str, version: str | None) -> None:
        if name != model.name:
            raise ModelNotFound(f"model {name!r} is not served here; this server serves {model.name!r}")
        if version is not None and version != model.version:
            have = f"version {model.version!r}" if model.version else "no versions"
            raise ModelNotFound(f"model {name!r} has no version {version!r} (it has {have})")

    @app.get("/v2")
    def server_metadata() -> Response:
        return json_response({"name": SERVER_NAME, "version": server_version, "extensions": []})

    @app.get("/v2/health/live")
    def live() -> Response:
        return json_response({"live": True})

    @app.get("/v2/health/ready")
    def ready() -> Response:
        model.require_ready()
        return json_response({"ready": True})

    @app.get("/v2/models/<name>")
    @app.get("/v2/models/<name>/versions/<version>")
    def model_metadata(name: str, version: str | None = None) -> Response:
        check_model(name, version)
        model.require_ready()
        return json_response(metadata(model))

    @app.get("/v2/models/<name>/ready")
    @app.get("/v2/models/<name>/versions/<version>/ready")
    def model_ready(name: str, version: str | None = None) -> Response:
        check_model(name, version)
        model.require_ready()
        return json_response({"name": model.name, "ready": True})

    @app.post("/v2/models/<name>/infer")
    @app.post("/v2/models/<name>/versions/<version>/infer")
    def infer(name: str, version: str | None = None) -> Response:
        check_model(name, version)
        model.require_ready()
        doc = body_json()
        rows, columns = decode_inputs(doc.get("inputs"))
        if columns is not None:
            order = model.arrange_columns(columns)
            if order is not None:
                rows = rows[:, order]
        outputs = requested_outputs(doc.get("outputs"), model)
        response: dict[str, Any] = {"model_name": model.name}
        if model.version:
            response["model_version"] = model.version
        if "id" in doc:
            if not isinstance(doc["id"], str):
                raise BadRequest("id must be a string")
            response["id"] = doc["id"]
        if "parameters" in doc:
            if not isinstance(doc["parameters"], dict):
                raise BadRequest("parameters must be an object")
            response["parameters"] = doc["parameters"]
        response["outputs"] = [tensors.encode(p.name, p.values) for p in model.predict(rows, outputs)]
        return json_response(response)


def metadata(model: ServedModel) -> dict:
    inputs = [{"name": "input-0", "datatype": "FP64", "shape": [-1, model.n_features]}]
    if model.feature_names:
        inputs[0]["parameters"] = {"feature_names": model.feature_names}
    classes = model.classes
    predict_type = "FP64"
    if classes is not None:
        predict_type = tensors.encode("", np.asarray(classes))["datatype"]
    outputs = [{"name": "predict", "datatype": predict_type, "shape": [-1]}]
    if model.has_proba:
        outputs.append({"name": "predict_proba", "datatype": "FP64", "shape": [-1, len(classes or [])]})
    doc: dict[str, Any] = {
        "name": model.name,
        "versions": [model.version] if model.version else [],
        "platform": "sklearn",
        "inputs": inputs,
        "outputs": outputs,
    }
    if classes is not None:
        doc["parameters"] = {"classes": classes}
    return doc


def decode_inputs(inputs: Any) -> tuple[np.ndarray, list[str] | None]:
    """One [N, F] tensor is the batch; several [N] or [N, 1] tensors are named columns."""
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest("inputs must be a non-empty list of tensors")
    decoded = [tensors.decode(t, f"inputs[{i}]") for i, t in enumerate(inputs)]
    if len(decoded) == 1:
        name, array = decoded[0]
        if array.ndim == 1:
            return array.reshape(-1, 1), None
        if array.ndim != 2:
            raise BadRequest(f"input {name!r} must have shape [rows, features], got {list(array.shape)}")
        return array, None
    columns = []
    names = []
    for name, array in decoded:
        if array.ndim == 2 and array.shape[1] == 1:
            array = array[:, 0]
        if array.ndim != 1:
            raise BadRequest(f"input {name!r}: with several inputs each is one column of shape [rows]")
        columns.append(array)
        names.append(name)
    lengths = {len(c) for c in columns}
    if len(lengths) != 1:
        raise BadRequest(f"inputs have different numbers of rows: {sorted(lengths)}")
    if len({c.dtype for c in columns}) == 1:
        return np.column_stack(columns), names
    table = np.empty((len(columns[0]), len(columns)), dtype=object)
    for j, column in enumerate(columns):
        table[:, j] = column
    return table, names


def requested_outputs(outputs: Any, model: ServedModel) -> tuple[str, ...]:
    """Exactly the outputs asked for; all of the model's when none are (as the protocol says)."""
    if outputs is None:
        return model.outputs
    if not isinstance(outputs, list) or not outputs:
        raise BadRequest("outputs must be a non-empty list of {\"name\": ...} objects")
    names = []
    for i, output in enumerate(outputs):
        if not isinstance(output, dict) or not isinstance(output.get("name"), str):
            raise BadRequest(f"outputs[{i}] must be an object with a name")
        names.append(output["name"])
    unknown = [n for n in names if n not in model.outputs]
    if unknown:
        raise BadRequest(f"unknown output {unknown[0]!r}: this model has {', '.join(model.outputs)}")
    return tuple(dict.fromkeys(names))

