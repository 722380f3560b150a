"""Open Inference Protocol tensors <-> numpy, checked strictly: datatype, shape and data agree.

Peers answer 500 when `data` has a string in an FP32 tensor or the shape does not match; here
each such mistake is a 400 that names the tensor and what was wrong.
"""

from __future__ import annotations

import math
from itertools import chain
from typing import Any

import numpy as np

from .errors import BadRequest

# datatype -> (numpy dtype, Python types its JSON elements may have)
DATATYPES: dict[str, tuple[Any, tuple[type, ...]]] = {
    "BOOL": (np.bool_, (bool,)),
    "INT8": (np.int8, (int,)),
    "INT16": (np.int16, (int,)),
    "INT32": (np.int32, (int,)),
    "INT64": (np.int64, (int,)),
    "UINT8": (np.uint8, (int,)),
    "UINT16": (np.uint16, (int,)),
    "UINT32": (np.uint32, (int,)),
    "UINT64": (np.uint64, (int,)),
    "FP16": (np.float16, (int, float)),
    "FP32": (np.float32, (int, float)),
    "FP64": (np.float64, (int, float)),
    "BYTES": (np.object_, (str,)),
}

MAX_DIMS = 8
"""Dimensions a tensor may declare: a batch of rows of features needs 2; numpy's own cap is 64,
and a shape past it (or one whose element count overflows) would be a numpy error, a 500."""
DEFAULT_MAX_BYTES = 10 * 1024 * 1024


def check_shape(shape: Any, datatype: str, where: str, max_bytes: int = DEFAULT_MAX_BYTES) -> int:
    """The element count of a declared shape, checked before anything is allocated for it:
    at most MAX_DIMS dimensions, and elements x item size within the body limit (`max_bytes`):
    a tensor never decodes to more than the body could carry, so [0, 2**62] is a 400, not a
    numpy error."""
    if not isinstance(shape, list) or not shape or any(type(d) is not int or d < 0 for d in shape):
        raise BadRequest(f"{where}: shape must be a non-empty list of non-negative integers")
    if len(shape) > MAX_DIMS:
        raise BadRequest(f"{where}: shape has {len(shape)} dimensions, at most {MAX_DIMS} are served")
    itemsize = 1 if datatype in ("BYTES", "BOOL") else np.dtype(DATATYPES[datatype][0]).itemsize
    count = 1
    for d in shape:
        if d > max_bytes:
            raise BadRequest(f"{where}: dimension {d} of shape {shape[:MAX_DIMS]} is over the body limit ({max_bytes} bytes)")
        count *= d
    if count * itemsize > max_bytes:
        raise BadRequest(f"{where}: shape {shape} of {datatype} is {count} elements ({count * itemsize} bytes), "
                         f"over the body limit of {max_bytes} bytes: send smaller batches")
    return count


_NUMPY_TO_DATATYPE = {
    np.dtype(np.bool_): "BOOL",
    **{np.dtype(dt): name for name, (dt, _) in DATATYPES.items() if name not in {"BOOL", "BYTES"}},
}


def decode(tensor: Any, where: str, raw: memoryview | None = None,
           max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[str, np.ndarray]:
    """A request input tensor -> (name, array of its declared shape and datatype); `raw` is its
    binary data when it was sent after the JSON header; `max_bytes` the body limit."""
    if not isinstance(tensor, dict):
        raise BadRequest(f"{where} must be an object with name, shape, datatype and data")
    name = tensor.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest(f"{where}.name must be a non-empty string")
    where = f"input {name!r}"
    shape: Any = tensor.get("shape")  # untrusted JSON: check_shape refuses all but a list of ints
    datatype = tensor.get("datatype")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise BadRequest(f"{where}: datatype must be one of {', '.join(DATATYPES)}, not {str(datatype)[:40]!r}")
    check_shape(shape, datatype, where, max_bytes)
    if raw is not None:
        if "data" in tensor:
            raise BadRequest(f"{where}: has both data and binary_data_size: send one")
        return name, decode_binary(name, datatype, shape, raw)
    if "data" not in tensor:
        raise BadRequest(f"{where}: data is missing")
    flat = flatten(tensor["data"], shape, where)
    dtype, allowed = DATATYPES[datatype]
    kinds = set(map(type, flat))
    if datatype != "BOOL" and bool in kinds:
        raise BadRequest(f"{where}: {datatype} data must not contain booleans")
    wrong = kinds - set(allowed) - ({bool} if datatype == "BOOL" else set())
    if wrong:
        bad = next(v for v in flat if type(v) in wrong)
        raise BadRequest(f"{where}: {datatype} data contains {_describe(bad)}")
    if datatype.startswith("INT") or datatype.startswith("UINT"):
        info = np.iinfo(dtype)
        out_of_range = next((v for v in flat if not info.min <= v <= info.max), None)
        if out_of_range is not None:
            raise BadRequest(f"{where}: {out_of_range} is out of range for {datatype}")
    if datatype == "BYTES":
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
    else:
        array = np.array(flat, dtype=dtype)
    return name, array.reshape(shape)


def flatten(data: Any, shape: list[int], where: str) -> list:
    """Row-major elements of `data`, given flat or nested, checked against `shape`."""
    if not isinstance(data, list):
        raise BadRequest(f"{where}: data must be a list")
    expected = math.prod(shape)
    if data and isinstance(data[0], list):
        if len(shape) == 2 and len(data) == shape[0] and all(type(r) is list and len(r) == shape[1] for r in data):
            return list(chain.from_iterable(data))  # the common [rows, features] case, fast
        flat: list = []
        _flatten_nested(data, shape, 0, flat, where)
        return flat
    if len(data) != expected:
        raise BadRequest(f"{where}: shape {shape} needs {expected} elements, data has {len(data)}")
    return data  # nested values left in it are caught by decode's element type check


def _flatten_nested(data: Any, shape: list[int], depth: int, out: list, where: str) -> None:
    if depth == len(shape):
        if isinstance(data, (list, dict)):
            raise BadRequest(f"{where}: data is nested deeper than shape {shape}")
        out.append(data)
        return
    if not isinstance(data, list) or len(data) != shape[depth]:
        got = f"{len(data)} elements" if isinstance(data, list) else _describe(data)
        raise BadRequest(f"{where}: data does not match shape {shape}: dimension {depth} has {got}")
    for item in data:
        _flatten_nested(item, shape, depth + 1, out, where)


def encode(name: str, values: np.ndarray) -> dict:
    """A response output tensor; strings and objects become BYTES."""
    datatype = _NUMPY_TO_DATATYPE.get(values.dtype, "BYTES")
    data = values.ravel().tolist()
    if datatype == "BYTES":
        data = [v if isinstance(v, str) else str(v) for v in data]
    return {"name": name, "datatype": datatype, "shape": list(values.shape), "data": data}


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


# -- Triton's binary tensor data extension (tritonclient's default, spoken by KServe too) ---------
# The body is a JSON header of `Inference-Header-Content-Length` bytes followed by the raw data
# of each tensor whose parameters carry `binary_data_size`, in the order the tensors are listed:
# little-endian fixed-size elements, BOOL as one byte each, BYTES as a 4-byte little-endian
# length before each element.
HEADER_LENGTH = "inference-header-content-length"
BINARY_SIZE = "binary_data_size"


def split_binary_body(raw: bytes, header_length: str) -> tuple[bytes, memoryview]:
    """(JSON header, the binary data after it), or a 400 when the length cannot be right."""
    try:
        length = int(header_length)
    except ValueError:
        raise BadRequest(f"Inference-Header-Content-Length must be an integer, not {header_length[:40]!r}") from None
    if not 0 < length <= len(raw):
        raise BadRequest(
            f"Inference-Header-Content-Length is {length} but the body has {len(raw)} bytes: the JSON header "
            "must be its first part"
        )
    return raw[:length], memoryview(raw)[length:]


def binary_size(tensor: dict, where: str) -> int | None:
    parameters = tensor.get("parameters")
    if not isinstance(parameters, dict) or BINARY_SIZE not in parameters:
        return None
    size = parameters[BINARY_SIZE]
    if type(size) is not int or size < 0:
        raise BadRequest(f"{where}: parameters.binary_data_size must be a non-negative integer")
    return size


def decode_binary(name: str, datatype: str, shape: list[int], data: memoryview) -> np.ndarray:
    """One tensor's binary data -> an array of its declared shape and datatype."""
    where = f"input {name!r}"
    count = math.prod(shape)
    if datatype == "BYTES":
        items = _unpack_bytes(data, where)
        if len(items) != count:
            raise BadRequest(f"{where}: shape {shape} needs {count} BYTES elements, the binary data has {len(items)}")
        array = np.empty(count, dtype=object)
        array[:] = items
        return array.reshape(shape)
    dtype = np.dtype(DATATYPES[datatype][0]).newbyteorder("<")
    if len(data) != count * dtype.itemsize:
        raise BadRequest(
            f"{where}: shape {shape} of {datatype} needs {count * dtype.itemsize} bytes, binary_data_size is {len(data)}"
        )
    array = np.frombuffer(data, dtype=dtype).reshape(shape)
    if datatype == "BOOL" and array.size and array.view(np.uint8).max() > 1:
        raise BadRequest(f"{where}: BOOL binary data must be bytes 0 or 1")
    return array.astype(dtype.newbyteorder("="), copy=False)


def _unpack_bytes(data: memoryview, where: str) -> list[str]:
    items, offset = [], 0
    while offset < len(data):
        if offset + 4 > len(data):
            raise BadRequest(f"{where}: BYTES binary data ends inside an element's 4-byte length")
        size = int.from_bytes(data[offset:offset + 4], "little")
        offset += 4
        if offset + size > len(data):
            raise BadRequest(f"{where}: a BYTES element of {size} bytes runs past the end of the binary data")
        try:
            items.append(bytes(data[offset:offset + size]).decode("utf-8"))
        except UnicodeDecodeError:
            raise BadRequest(f"{where}: BYTES elements must be UTF-8 text") from None
        offset += size
    return items


def encode_binary(name: str, values: np.ndarray) -> tuple[dict, bytes]:
    """A response output tensor whose data follows the JSON header, and that data."""
    datatype = _NUMPY_TO_DATATYPE.get(values.dtype, "BYTES")
    if datatype == "BYTES":
        parts = []
        for v in values.ravel().tolist():
            item = (v if isinstance(v, str) else str(v)).encode("utf-8")
            parts.append(len(item).to_bytes(4, "little") + item)
        raw = b"".join(parts)
    else:
        raw = np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<")).tobytes()
    tensor = {"name": name, "datatype": datatype, "shape": list(values.shape), "parameters": {BINARY_SIZE: len(raw)}}
    return tensor, raw
