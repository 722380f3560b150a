"""Open Inference Protocol (KServe V2) REST endpoints, with Triton's binary tensor data
extension in both directions (tritonclient sends and asks for binary data by default)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from . import tensors
from .dataplane import Protocol, Route
from .errors import BadRequest, ModelUnavailable, UnsupportedMediaType
from .http_io import JSON, JSON_LIKE, Reply, Request, json_reply, parse_json_object
from .model import ServedModel

if TYPE_CHECKING:
    from .dataplane import DataPlane

SERVER_NAME = "predictive-infer"
EXTENSIONS = ["binary_tensor_data"]
OCTET_STREAM = "application/octet-stream"


def server_metadata(plane: DataPlane, request: Request) -> Reply:
    extensions = EXTENSIONS + list(plane.models.extensions)
    return json_reply({"name": SERVER_NAME, "version": plane.server_version, "extensions": extensions})


def live(plane: DataPlane, request: Request) -> Reply:
    return json_reply({"live": True})


def ready(plane: DataPlane, request: Request) -> Reply:
    plane.models.require_ready()
    return json_reply({"ready": True})


def _model(plane: DataPlane, request: Request) -> ServedModel:
    model = plane.models.get(request.params["name"], request.params.get("version"))
    model.require_ready()
    return model


def model_metadata(plane: DataPlane, request: Request) -> Reply:
    return json_reply(metadata(_model(plane, request)))


def model_ready(plane: DataPlane, request: Request) -> Reply:
    """Whether the model is loaded: never loads it (in the pool, 503 until it is)."""
    model = plane.models.peek(request.params["name"], request.params.get("version"))
    model.require_ready()
    return json_reply({"name": model.name, "ready": True})


# -- the model repository extension (Triton's protocol/extension_model_repository.md, as KServe
# serves it too): the pool's index, and load/unload by name, so that a controller can pre-load
# the models it forecasts. Bodies are optional (tritonclient sends "" to index, {} to load).
def repository_index(plane: DataPlane, request: Request) -> Reply:
    doc = _optional_object(request)
    ready_only = doc.get("ready", False)
    if not isinstance(ready_only, bool):
        raise BadRequest("ready must be a boolean")
    return json_reply(plane.models.index(ready_only))


def repository_load(plane: DataPlane, request: Request) -> Reply:
    doc = _optional_object(request)
    parameters = doc.get("parameters", {})
    if not isinstance(parameters, dict):
        raise BadRequest("parameters must be an object")
    if parameters:
        raise BadRequest(f"load parameters are not supported here ({', '.join(sorted(parameters))}): "
                         "models load from the repository manifest as listed")
    try:
        plane.models.load(request.params["name"])
    except ModelUnavailable as exc:
        raise BadRequest(exc.message) from None  # Triton: a failed load is a 400
    return json_reply({"name": request.params["name"], "load": True})


def repository_unload(plane: DataPlane, request: Request) -> Reply:
    doc = _optional_object(request)
    if not isinstance(doc.get("parameters", {}), dict):
        raise BadRequest("parameters must be an object")
    pending = plane.models.unload(request.params["name"])
    reply = {"name": request.params["name"], "unload": True}
    if pending:
        reply["parameters"] = {"when": "its load in flight ends"}
    return json_reply(reply)


def _optional_object(request: Request) -> dict:
    return parse_json_object(request.body) if request.body.strip() else {}


def infer(plane: DataPlane, request: Request) -> Reply:
    model = _model(plane, request)
    doc, binary = read_body(request)
    rows, columns = decode_inputs(doc.get("inputs"), binary, plane.max_body_bytes)
    outputs, binary_outputs = requested_outputs(doc, model)
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
    predictions = plane.predict(model, columns, rows, outputs)
    if not binary_outputs:
        response["outputs"] = [tensors.encode(p.name, p.values) for p in predictions]
        return json_reply(response)
    blobs = []
    response["outputs"] = []
    for p in predictions:
        if p.name in binary_outputs:
            tensor, raw = tensors.encode_binary(p.name, p.values)
            blobs.append(raw)
        else:
            tensor = tensors.encode(p.name, p.values)
        response["outputs"].append(tensor)
    header = orjson.dumps(response)
    return Reply(200, header + b"".join(blobs), OCTET_STREAM, [("Inference-Header-Content-Length", str(len(header)))])


def read_body(request: Request) -> tuple[dict, memoryview | None]:
    """The JSON request and, with the binary extension, the bytes after it."""
    header_length = request.headers.get(tensors.HEADER_LENGTH)
    if header_length is None:
        if request.media_type not in JSON_LIKE:
            raise UnsupportedMediaType(f"content type {request.headers.get('content-type')!r} is not supported: send {JSON}")
        return parse_json_object(request.body), None
    if request.media_type not in JSON_LIKE | {OCTET_STREAM}:
        raise UnsupportedMediaType(
            f"content type {request.headers.get('content-type')!r} is not supported: send {JSON} or {OCTET_STREAM}"
        )
    header, binary = tensors.split_binary_body(request.body, header_length)
    return parse_json_object(header), binary


def metadata(model: ServedModel) -> dict:
    info = model.info
    inputs: list[dict[str, Any]] = [{"name": "input-0", "datatype": "FP64", "shape": [-1, info.n_features]}]
    if info.feature_names:
        inputs[0]["parameters"] = {"feature_names": info.feature_names}
    predict_type = "FP64"
    if info.classes is not None:
        predict_type = tensors.encode("", np.asarray(info.classes))["datatype"]
    outputs = [{"name": "predict", "datatype": predict_type, "shape": [-1]}]
    if "predict_proba" in info.outputs:
        outputs.append({"name": "predict_proba", "datatype": "FP64", "shape": [-1, len(info.classes or [])]})
    doc: dict[str, Any] = {
        "name": model.name,
        "versions": [model.version] if model.version else [],
        "platform": info.platform,
        "inputs": inputs,
        "outputs": outputs,
    }
    if info.classes is not None:
        doc["parameters"] = {"classes": info.classes}
    return doc


def decode_inputs(inputs: Any, binary: memoryview | None = None,
                  max_bytes: int = tensors.DEFAULT_MAX_BYTES) -> tuple[np.ndarray, list[str] | None]:
    """One [N, F] tensor is the batch; several [N] or [N, 1] tensors are named columns."""
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest("inputs must be a non-empty list of tensors")
    decoded = []
    offset = 0
    for i, tensor in enumerate(inputs):
        size = tensors.binary_size(tensor, f"inputs[{i}]") if isinstance(tensor, dict) else None
        if size is None:
            decoded.append(tensors.decode(tensor, f"inputs[{i}]", None, max_bytes))
            continue
        if binary is None:
            raise BadRequest(f"inputs[{i}] has binary_data_size but the request has no Inference-Header-Content-Length")
        if offset + size > len(binary):
            raise BadRequest(
                f"inputs' binary_data_size add up to more than the {len(binary)} bytes after the JSON header"
            )
        decoded.append(tensors.decode(tensor, f"inputs[{i}]", binary[offset:offset + size], max_bytes))
        offset += size
    if binary is not None and offset != len(binary):
        raise BadRequest(
            f"{len(binary)} bytes follow the JSON header but the inputs' binary_data_size add up to {offset}"
        )
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


def requested_outputs(doc: dict, model: ServedModel) -> tuple[tuple[str, ...], frozenset[str]]:
    """Exactly the outputs asked for (all of the model's when none are, as the protocol says),
    and those to send as binary data: asked per output (`parameters.binary_data`) or for all
    (`parameters.binary_data_output`, what tritonclient sends when no outputs are named)."""
    parameters = doc.get("parameters")
    all_binary = isinstance(parameters, dict) and parameters.get("binary_data_output") is True
    outputs = doc.get("outputs")
    if outputs is None:
        return model.outputs, frozenset(model.outputs if all_binary else ())
    if not isinstance(outputs, list) or not outputs:
        raise BadRequest("outputs must be a non-empty list of {\"name\": ...} objects")
    names = []
    binary = set()
    for i, output in enumerate(outputs):
        if not isinstance(output, dict) or not isinstance(output.get("name"), str):
            raise BadRequest(f"outputs[{i}] must be an object with a name")
        names.append(output["name"])
        flag = (output.get("parameters") or {}).get("binary_data") if isinstance(output.get("parameters"), dict) else None
        if flag is True or (flag is None and all_binary):
            binary.add(output["name"])
    unknown = [n for n in names if n not in model.outputs]
    if unknown:
        raise BadRequest(f"unknown output {unknown[0]!r}: this model has {', '.join(model.outputs)}")
    return tuple(dict.fromkeys(names)), frozenset(binary)


def error_body(request: Request, status: int, message: str) -> dict:
    body: dict[str, Any] = {"error": message}
    if request.path == "/v2/health/ready" or request.path.endswith("/ready"):
        body["ready"] = False
    return body


MODEL = "/v2/models/{name}"
VERSION = "/v2/models/{name}/versions/{version}"
PROTOCOL = Protocol(
    name="v2",
    prefixes=("/v2",),
    error_body=error_body,
    routes=[
        Route("GET", "/v2", server_metadata),
        Route("GET", "/v2/health/live", live, traffic=False),
        Route("GET", "/v2/health/ready", ready, traffic=False),
        Route("POST", f"{MODEL}/infer", infer),
        Route("POST", f"{VERSION}/infer", infer),
        Route("GET", f"{MODEL}/ready", model_ready),
        Route("GET", f"{VERSION}/ready", model_ready),
        Route("GET", MODEL, model_metadata),
        Route("GET", VERSION, model_metadata),
        # control, not traffic: a pre-load by the scale function is no user's request
        Route("POST", "/v2/repository/index", repository_index, traffic=False, control=True),
        Route("POST", "/v2/repository/models/{name}/load", repository_load, traffic=False, control=True),
        Route("POST", "/v2/repository/models/{name}/unload", repository_unload, traffic=False, control=True),
    ],
)
