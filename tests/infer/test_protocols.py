"""The three protocols against the real standalone server (gunicorn, 2 workers), called with the
clients users have: tritonclient's HTTP client for V2, plain HTTP for V1 and MLflow. Every
prediction, from the ONNX file and from the scikit-learn ones, is compared with the
estimator's own predict on the same rows."""

from __future__ import annotations

import io
from pathlib import Path

import joblib
import numpy as np
import pytest
import requests
import tritonclient.http as httpclient
from sklearn.datasets import load_diabetes, load_wine


@pytest.fixture(scope="module")
def wine(models_dir: Path):
    return joblib.load(models_dir / "wine.joblib")


@pytest.fixture(scope="module")
def wine_rows() -> np.ndarray:
    X, _ = load_wine(return_X_y=True)
    return X[::7]  # 26 rows across the three classes


@pytest.fixture(scope="module", params=["wine.onnx", "wine.joblib", "wine.skops", "wine-mlflow"])
def wine_server(request, models_dir: Path, infer_server_factory):
    server = infer_server_factory(models_dir / request.param)
    server.artifact = request.param
    return server


def test_triton_client_health_and_metadata(wine_server, wine):
    client = httpclient.InferenceServerClient(wine_server.url.removeprefix("http://"))
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("wine")
    assert client.is_model_ready("wine", "1")
    assert not client.is_model_ready("no-such-model")
    meta = client.get_model_metadata("wine")
    assert meta["name"] == "wine" and meta["versions"] == ["1"]
    assert meta["inputs"][0]["shape"] == [-1, wine.n_features_in_]
    assert [o["name"] for o in meta["outputs"]] == ["predict", "predict_proba"]
    assert meta["parameters"]["classes"] == wine.classes_.tolist()
    server = client.get_server_metadata()
    assert server["name"] == "predictive-infer"


@pytest.mark.parametrize("datatype", ["FP64", "FP32"])
def test_triton_client_infer_matches_estimator(wine_server, wine, wine_rows, datatype):
    client = httpclient.InferenceServerClient(wine_server.url.removeprefix("http://"))
    rows = wine_rows.astype(np.float64 if datatype == "FP64" else np.float32)
    tensor = httpclient.InferInput("input-0", list(rows.shape), datatype)
    tensor.set_data_from_numpy(rows, binary_data=False)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=False) for n in ("predict", "predict_proba")]
    result = client.infer("wine", [tensor], outputs=outputs, request_id="req-42", model_version="1")
    if wine_server.artifact.endswith(".onnx"):
        rows = rows.astype(np.float64)  # the ONNX graph computes in float64 whatever it is sent
    np.testing.assert_array_equal(result.as_numpy("predict"), wine.predict(rows))
    np.testing.assert_allclose(result.as_numpy("predict_proba"), wine.predict_proba(rows), rtol=1e-12)
    response = result.get_response()
    assert response["id"] == "req-42" and response["model_version"] == "1"


def test_v2_only_requested_outputs_and_parameters_echoed(wine_server, wine, wine_rows):
    body = {
        "inputs": [{"name": "x", "shape": list(wine_rows.shape), "datatype": "FP64", "data": wine_rows.tolist()}],
        "outputs": [{"name": "predict_proba"}],
        "parameters": {"trace": "abc"},
    }
    r = requests.post(f"{wine_server.url}/v2/models/wine/infer", json=body, timeout=10)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert [o["name"] for o in doc["outputs"]] == ["predict_proba"]
    assert doc["parameters"] == {"trace": "abc"}
    assert doc["outputs"][0]["shape"] == [len(wine_rows), 3]
    got = np.asarray(doc["outputs"][0]["data"]).reshape(doc["outputs"][0]["shape"])
    np.testing.assert_allclose(got, wine.predict_proba(wine_rows), rtol=1e-12)


def test_v1_predict_matches_estimator(wine_server, wine, wine_rows):
    r = requests.get(f"{wine_server.url}/v1/models/wine", timeout=5)
    assert r.json() == {"name": "wine", "ready": True}
    r = requests.post(f"{wine_server.url}/v1/models/wine:predict", json={"instances": wine_rows.tolist()}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == wine.predict(wine_rows).tolist()


def test_mlflow_all_input_forms_match_estimator(wine_server, wine, wine_rows):
    names = [f"f{i}" for i in range(wine_rows.shape[1])]
    expected = wine.predict(wine_rows).tolist()
    payloads = {
        "dataframe_split": {"columns": names, "data": wine_rows.tolist()},
        "dataframe_records": [dict(zip(names, row)) for row in wine_rows.tolist()],
        "instances": wine_rows.tolist(),
        "inputs": {n: wine_rows[:, i].tolist() for i, n in enumerate(names)},
    }
    for key, payload in payloads.items():
        r = requests.post(f"{wine_server.url}/invocations", json={key: payload}, timeout=10)
        assert r.status_code == 200, (key, r.text)
        assert r.json() == {"predictions": expected}, key
    csv = io.StringIO()
    np.savetxt(csv, wine_rows, delimiter=",", header=",".join(names), comments="", fmt="%.17g")
    r = requests.post(f"{wine_server.url}/invocations", data=csv.getvalue(), headers={"Content-Type": "text/csv"}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": expected}
    for path in ("/ping", "/health", "/version"):
        assert requests.get(wine_server.url + path, timeout=5).status_code == 200


@pytest.mark.parametrize("artifact", ["diabetes.onnx", "diabetes.joblib"])
def test_regressor_with_feature_names_matches_in_any_column_order(models_dir, infer_server_factory, artifact):
    """A model fitted on a DataFrame: named columns are matched by name, whatever their order."""
    model = joblib.load(models_dir / "diabetes.joblib")
    frame = load_diabetes(as_frame=True).data.iloc[:20]
    expected = model.predict(frame)
    server = infer_server_factory(models_dir / artifact)
    shuffled = list(reversed(frame.columns))
    records = [{c: row[c] for c in shuffled} for row in frame.to_dict("records")]
    r = requests.post(f"{server.url}/invocations", json={"dataframe_records": records}, timeout=10)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["predictions"], expected, rtol=1e-12)
    # V2 with one named tensor per column, in shuffled order
    inputs = [{"name": c, "shape": [len(frame)], "datatype": "FP64", "data": frame[c].tolist()} for c in shuffled]
    r = requests.post(f"{server.url}/v2/models/diabetes/infer", json={"inputs": inputs}, timeout=10)
    assert r.status_code == 200, r.text
    (out,) = r.json()["outputs"]
    assert out["name"] == "predict" and out["datatype"] == "FP64"
    np.testing.assert_allclose(out["data"], expected, rtol=1e-12)
    meta = requests.get(f"{server.url}/v2/models/diabetes", timeout=5).json()
    assert meta["inputs"][0]["parameters"]["feature_names"] == list(frame.columns)
    assert [o["name"] for o in meta["outputs"]] == ["predict"]


def test_metrics_count_client_requests_across_workers_not_probes(models_dir, infer_server_factory):
    server = infer_server_factory(models_dir / "wine.joblib", workers=2)
    row = load_wine().data[:1].tolist()
    for _ in range(3):
        requests.get(f"{server.url}/v2/health/ready", timeout=5)
        requests.get(f"{server.url}/ping", timeout=5)
    for _ in range(10):
        assert requests.post(f"{server.url}/v1/models/wine:predict", json={"instances": row}, timeout=5).ok
    for _ in range(4):
        requests.post(f"{server.url}/invocations", json={"instances": [[1, 2]]}, timeout=5)
    text = requests.get(f"{server.url}/metrics", timeout=5).text
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("infer_")}
    assert samples['infer_requests_total{code="200",model="wine",protocol="v1"}'] == 10
    assert samples['infer_requests_total{code="400",model="wine",protocol="mlflow"}'] == 4
    assert not any("health" in k or "ping" in k for k in samples)
    assert sum(v for k, v in samples.items() if k.startswith("infer_requests_total")) == 14
    assert samples['infer_request_duration_seconds_count{model="wine",protocol="v1"}'] == 10
    assert samples['infer_model_load_seconds{model="wine"}'] > 0
    assert samples['infer_requests_in_flight{model="wine"}'] == 0
