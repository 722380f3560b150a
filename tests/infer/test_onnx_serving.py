"""Serving ONNX: the real servers (gunicorn and func-python) never import scikit-learn or
scipy on that path; tritonclient with its defaults (binary tensor data both ways) gets the
estimator's predictions for every datatype the server accepts, from ONNX and joblib alike;
binary bodies whose sizes do not add up are a 400 that says so; a 405 lists what is allowed."""

from __future__ import annotations

import json
import re
import shutil
import signal
import time
from pathlib import Path

import joblib
import numpy as np
import pytest
import requests
import tritonclient.http as httpclient
from sklearn.datasets import load_wine

from infer.artifacts import load_artifact
from infer.settings import InferSettings
from tests.support.functions import start_function
from tests.support.servers import wait_until
from training.publish_model import ATOL, RTOL

ROW = load_wine().data[0]
FORBIDDEN = re.compile(r"\|\s+(sklearn|scipy)(\.|\s*$)", re.M)


def imported_modules(log_text: str) -> set[str]:
    """Module names from `-X importtime` lines (PYTHONPROFILEIMPORTTIME=1), in every process
    that wrote to the log: every module an import statement loaded (importlib.import_module's
    own target is not logged, but whatever that module imports is)."""
    return {line.rsplit("|", 1)[1].strip() for line in log_text.splitlines() if line.startswith("import time:")}


def infer_one(url: str) -> dict:
    body = {"inputs": [{"name": "x", "shape": [1, 13], "datatype": "FP64", "data": ROW.tolist()}]}
    r = requests.post(f"{url}/v2/models/wine/infer", json=body, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def test_standalone_server_on_onnx_imports_no_sklearn_or_scipy(models_dir, infer_server_factory):
    server = infer_server_factory(models_dir / "wine.onnx", env={"PYTHONPROFILEIMPORTTIME": "1"}, workers=2)
    assert infer_one(server.url)["outputs"][0]["data"] == joblib.load(models_dir / "wine.joblib").predict([ROW]).tolist()
    modules = imported_modules(server.log.read_text())
    assert {"onnxruntime", "numpy", "gunicorn"} <= modules
    assert not {m for m in modules if m.split(".")[0] in {"sklearn", "scipy", "joblib", "skops"}}
    assert not FORBIDDEN.search(server.log.read_text())


def test_function_serves_onnx_under_func_python_without_sklearn(models_dir, tmp_path):
    fn = start_function("infer", {"MODEL_ROOT": str(models_dir), "MODEL_PATH": "wine.onnx",
                                  "PYTHONPROFILEIMPORTTIME": "1"}, tmp_path / "infer.log")
    try:
        client = httpclient.InferenceServerClient(fn.url.removeprefix("http://"))
        X = load_wine().data[::9]
        tensor = httpclient.InferInput("input-0", list(X.shape), "FP64")
        tensor.set_data_from_numpy(X)
        result = client.infer("wine", [tensor])
        estimator = joblib.load(models_dir / "wine.joblib")
        np.testing.assert_array_equal(result.as_numpy("predict"), estimator.predict(X))
        np.testing.assert_allclose(result.as_numpy("predict_proba"), estimator.predict_proba(X), rtol=RTOL, atol=ATOL)
        modules = imported_modules(fn.log.read_text())
        assert {"onnxruntime", "func_python.http"} <= modules
        assert not {m for m in modules if m.split(".")[0] in {"sklearn", "scipy", "joblib", "skops"}}
    finally:
        fn.stop()


def test_model_format_onnx_loads_a_file_of_any_name(models_dir, tmp_path):
    shutil.copy(models_dir / "wine.onnx", tmp_path / "wine.model")
    artifact = load_artifact(InferSettings.from_env({"MODEL_ROOT": str(tmp_path), "MODEL_PATH": "wine.model",
                                                     "MODEL_FORMAT": "onnx"}))
    assert artifact.format == "onnx" and artifact.runtime.info.outputs == ("predict", "predict_proba")


@pytest.fixture(scope="module", params=["wine.onnx", "wine.joblib"])
def server(request, models_dir, infer_server_factory):
    started = infer_server_factory(models_dir / request.param)
    started.artifact = request.param
    return started


@pytest.fixture(scope="module")
def wine(models_dir):
    return joblib.load(models_dir / "wine.joblib")


# every datatype the server accepts, with rows the estimator sees after the same cast
DATATYPES = {
    "FP64": np.float64, "FP32": np.float32, "FP16": np.float16,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "BOOL": np.bool_, "BYTES": np.object_,
}


def rows_for(datatype: str) -> tuple[np.ndarray, np.ndarray]:
    """(what the client sends, the float rows the estimator is given)."""
    X = load_wine().data[::6]
    if datatype == "BOOL":
        sent = X > np.median(X, axis=0)
    elif datatype == "BYTES":
        sent = np.array([[repr(v) for v in row] for row in X.tolist()], dtype=np.object_)
        return sent, X
    elif datatype.startswith("INT") or datatype.startswith("UINT"):
        info = np.iinfo(DATATYPES[datatype])
        sent = np.clip(np.round(X), info.min, info.max).astype(DATATYPES[datatype])
    else:
        sent = X.astype(DATATYPES[datatype])
    return sent, sent.astype(np.float64)


@pytest.mark.parametrize("datatype", sorted(DATATYPES))
def test_tritonclient_defaults_binary_both_ways_match_estimator(server, wine, datatype):
    client = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
    sent, seen = rows_for(datatype)
    if server.artifact.endswith(".joblib") and sent.dtype.kind == "f":
        seen = sent  # the estimator computes in the float type it is given (ONNX in float64)
    tensor = httpclient.InferInput("input-0", list(sent.shape), datatype)
    tensor.set_data_from_numpy(sent)  # binary_data=True: tritonclient's default
    result = client.infer("wine", [tensor])  # no outputs named: all of them, in binary
    assert result.get_response()["outputs"][0]["parameters"]["binary_data_size"] > 0
    np.testing.assert_array_equal(result.as_numpy("predict"), wine.predict(seen))
    np.testing.assert_allclose(result.as_numpy("predict_proba"), wine.predict_proba(seen), rtol=RTOL, atol=ATOL)


def test_tritonclient_binary_in_json_out_and_per_output_choice(server, wine):
    client = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
    X = load_wine().data[::5]
    tensor = httpclient.InferInput("input-0", list(X.shape), "FP64")
    tensor.set_data_from_numpy(X)
    outputs = [httpclient.InferRequestedOutput("predict", binary_data=False), httpclient.InferRequestedOutput("predict_proba")]
    result = client.infer("wine", [tensor], outputs=outputs, request_id="r-7")
    response = result.get_response()
    assert response["id"] == "r-7"
    assert "data" in response["outputs"][0] and "binary_data_size" in response["outputs"][1]["parameters"]
    np.testing.assert_array_equal(result.as_numpy("predict"), wine.predict(X))
    np.testing.assert_allclose(result.as_numpy("predict_proba"), wine.predict_proba(X), rtol=RTOL, atol=ATOL)


def binary_request(url: str, header: dict, blob: bytes, header_length: int | None = None) -> requests.Response:
    raw = json.dumps(header).encode()
    length = len(raw) if header_length is None else header_length
    return requests.post(f"{url}/v2/models/wine/infer", data=raw + blob, timeout=10,
                         headers={"Inference-Header-Content-Length": str(length), "Content-Type": "application/octet-stream"})


def tensor(datatype: str, shape: list[int], size: int) -> dict:
    return {"inputs": [{"name": "x", "datatype": datatype, "shape": shape, "parameters": {"binary_data_size": size}}]}


BLOB = np.tile(ROW, 2).astype("<f8").tobytes()  # two FP64 rows, 208 bytes

BAD_BINARY = [
    # (JSON header, binary part, header length override, words the 400 must contain)
    (tensor("FP64", [2, 13], 208), BLOB, 10_000, "the body has"),
    (tensor("FP64", [2, 13], 208), BLOB, -5, "the body has"),
    (tensor("FP64", [2, 13], 208), BLOB, "x", "must be an integer"),
    (tensor("FP64", [2, 13], 300), BLOB, None, "add up to more than the 208 bytes"),
    (tensor("FP64", [1, 13], 104), BLOB, None, "208 bytes follow the JSON header but the inputs' binary_data_size add up to 104"),
    (tensor("FP64", [1, 13], 208), BLOB, None, "needs 104 bytes, binary_data_size is 208"),
    (tensor("FP32", [2, 13], 208), BLOB, None, "needs 104 bytes"),
    (tensor("FP64", [2, 13], -1), BLOB, None, "non-negative integer"),
    (tensor("BYTES", [1, 1], 3), b"\x05\x00\x00", None, "4-byte length"),
    (tensor("BYTES", [1, 1], 6), b"\x05\x00\x00\x00ab", None, "runs past the end"),
    (tensor("BYTES", [1, 2], 6), b"\x02\x00\x00\x00ab", None, "needs 2 BYTES elements"),
    (tensor("BOOL", [1, 13], 13), bytes([2] * 13), None, "0 or 1"),
    ({"inputs": [{"name": "x", "datatype": "FP64", "shape": [2, 13], "data": [0] * 26,
                  "parameters": {"binary_data_size": 208}}]}, BLOB, None, "both data and binary_data_size"),
]


@pytest.mark.parametrize("header,blob,length,words", BAD_BINARY, ids=[c[3] for c in BAD_BINARY])
def test_binary_sizes_that_do_not_add_up_are_a_clear_400(server, header, blob, length, words):
    r = binary_request(server.url, header, blob, length)
    assert r.status_code == 400, r.text
    assert words in r.json()["error"]


def test_binary_size_without_the_header_length_is_a_400(server):
    r = requests.post(f"{server.url}/v2/models/wine/infer", json=tensor("FP64", [1, 13], 104), timeout=10)
    assert r.status_code == 400 and "no Inference-Header-Content-Length" in r.json()["error"]


def test_405_carries_an_allow_header(server):
    r = requests.get(f"{server.url}/v2/models/wine/infer", timeout=5)
    assert r.status_code == 405 and r.headers["Allow"] == "POST"
    assert "not allowed" in r.json()["error"]
    r = requests.post(f"{server.url}/v2/health/ready", timeout=5)
    assert r.status_code == 405 and set(r.headers["Allow"].split(", ")) == {"GET", "HEAD"}
    r = requests.delete(f"{server.url}/invocations", timeout=5)
    assert r.status_code == 405 and r.headers["Allow"] == "POST" and r.json()["error_code"] == "BAD_REQUEST"


def test_standalone_server_on_onnx_stops_promptly_with_its_workers(models_dir, infer_server_factory):
    """Workers forked after onnxruntime loaded used to hang in interpreter exit until the
    master's SIGKILL (10 s), and a master stopped sooner left them orphaned."""
    server = infer_server_factory(models_dir / "wine.onnx", workers=2)

    def workers() -> list[int]:
        return [int(c) for t in Path(f"/proc/{server.process.pid}/task").glob("*")
                for c in (t / "children").read_text().split()]

    wait_until(lambda: len(workers()) == 2, 30, "two workers", server.process)
    children = workers()
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(timeout=8)
    assert time.monotonic() - started < 5
    for pid in children:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()


def test_head_is_get_without_a_body(server):
    got = requests.get(f"{server.url}/v2/models/wine", timeout=5)
    r = requests.head(f"{server.url}/v2/models/wine", timeout=5)
    assert r.status_code == 200 and r.content == b""
    assert r.headers["Content-Length"] == got.headers["Content-Length"] == str(len(got.content))
