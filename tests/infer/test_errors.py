"""Every client mistake gets a 4xx with a JSON reason; faults of the model gate get 503."""

from __future__ import annotations

import json

import pytest

from tests.infer.conftest import client_for, make_app

ROW = [14.23, 1.71, 2.43, 15.6, 127.0, 2.8, 3.06, 0.28, 2.29, 5.64, 1.04, 3.92, 1065.0]
V2 = "/v2/models/wine/infer"


def v2(data=None, shape=(1, 13), datatype="FP64", **extra):
    tensor = {"name": "input-0", "shape": list(shape), "datatype": datatype, "data": ROW if data is None else data}
    return {"inputs": [tensor], **extra}


CASES = [
    # (path, body, content type, status, words the error must contain)
    (V2, b"{not json", "application/json", 400, "malformed JSON"),
    (V2, b"[1, 2]", "application/json", 400, "JSON object"),
    (V2, b"", "application/json", 400, "empty"),
    (V2, b"{\"a\": \"\xc3\x28\"}", "application/json", 400, "UTF-8"),
    (V2, v2(shape=(2, 13)), None, 400, "needs 26 elements"),
    (V2, v2(data=[ROW[:12]], shape=(1, 13)), None, 400, "dimension 1 has 12"),
    (V2, v2(data=ROW[:12], shape=(1, 12)), None, 400, "expects 13 features"),
    (V2, v2(data=["x"] + ROW[1:]), None, 400, "the string 'x'"),
    (V2, v2(data=[None] + ROW[1:]), None, 400, "null"),
    (V2, v2(data=[True] + ROW[1:]), None, 400, "booleans"),
    (V2, v2(data=[1.5] * 13, datatype="INT32"), None, 400, "INT32 data contains float"),
    (V2, v2(data=[300] * 13, datatype="INT8"), None, 400, "out of range"),
    (V2, v2(data=[-1] * 13, datatype="UINT16"), None, 400, "out of range"),
    (V2, v2(datatype="FP128"), None, 400, "datatype must be one of"),
    (V2, v2(shape=(1, -13)), None, 400, "non-negative"),
    (V2, {"inputs": []}, None, 400, "non-empty list"),
    (V2, {"inputs": [{"shape": [1], "datatype": "FP64", "data": [1]}]}, None, 400, "name"),
    (V2, v2(outputs=[{"name": "decision_function"}]), None, 400, "unknown output"),
    (V2, v2(id=7), None, 400, "id must be a string"),
    (V2, v2(parameters=[1]), None, 400, "parameters must be an object"),
    (V2, v2(data=[[[1.0]]], shape=(1, 1)), None, 400, "contains a list"),
    (V2, v2(data=[[[1.0]]], shape=(1, 1, 1, 1)), None, 400, "dimension 3 has float"),
    (V2, v2(data=[[[[1.0]]]], shape=(1, 1, 1)), None, 400, "deeper"),
    ("/v2/models/nope/infer", v2(), None, 404, "not served here"),
    ("/v2/models/wine/versions/9/infer", v2(), None, 404, "no version '9'"),
    (V2, b"<xml/>", "text/xml", 415, "not supported"),
    ("/v1/models/wine:predict", {"instances": [ROW, ROW[:3]]}, None, 400, "has 3 values"),
    ("/v1/models/wine:predict", {"instances": [ROW], "inputs": [ROW]}, None, 400, "exactly one"),
    ("/v1/models/wine:predict", {"rows": [ROW]}, None, 400, "exactly one"),
    ("/v1/models/wine:predict", {"instances": [[None] * 13]}, None, 400, "null"),
    ("/v1/models/wine:predict", {"instances": [["a"] * 13]}, None, 400, "model rejected the input"),
    ("/v1/models/wine:predict", {"instances": [[10**400] * 13]}, None, 400, "infinity when parsed as double"),
    (V2, v2(data=[10**400] * 13), None, 400, "infinity when parsed as double"),
    (V2, v2(data=[2**64] * 13, datatype="UINT64"), None, 400, "UINT64 data contains float"),
    (V2, v2(data=[2**63] * 13, datatype="INT64"), None, 400, "out of range"),
    ("/v1/models/other:predict", {"instances": [ROW]}, None, 404, "not served here"),
    ("/invocations", {"instances": [ROW], "inputs": [ROW]}, None, 400, "exactly one"),
    ("/invocations", {"dataframe_split": {"columns": ["a"], "data": [ROW]}}, None, 400, "one name per value"),
    ("/invocations", {"dataframe_records": [{"a": 1}, {"b": 2}]}, None, 400, "has fields"),
    ("/invocations", {"inputs": {"a": [1, 2], "b": [1]}}, None, 400, "has 1 values"),
    ("/invocations", b"a,b\n1,2,3\n", "text/csv", 400, "CSV line 2"),
    ("/invocations", b"a,b\n", "text/csv", 400, "no rows"),
    ("/invocations", b"x=1", "application/x-www-form-urlencoded", 415, "not supported"),
    ("/invocations", {"instances": [ROW], "params": 3}, None, 400, "params must be an object"),
]


@pytest.mark.parametrize("path,body,content_type,status,words", CASES, ids=[f"{c[0]}-{c[3]}-{c[4]}" for c in CASES])
def test_bad_input_is_a_clear_4xx(client, path, body, content_type, status, words):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = client.post(path, data=data, content_type=content_type or "application/json")
    assert r.status_code == status, r.get_data(as_text=True)
    doc = r.get_json()
    assert words in doc["error"], doc
    if path == "/invocations":
        assert doc["message"] == doc["error"] and doc["error_code"]


def test_body_over_the_limit_is_413(client):
    body = json.dumps(v2(data=[0.0] * 13 * 4000, shape=(4000, 13))).encode()
    assert len(body) > 65536
    r = client.post(V2, data=body, content_type="application/json")
    assert r.status_code == 413 and "limit" in r.get_json()["error"]


def test_unknown_route_and_method_are_json(client):
    r = client.get("/v3/whatever")
    assert r.status_code == 404 and "no endpoint" in r.get_json()["error"]
    r = client.get(V2)
    assert r.status_code == 405 and "not allowed" in r.get_json()["error"]


def test_not_ready_when_sha256_mismatches(models_dir):
    app, model = make_app(models_dir, MODEL_SHA256="0" * 64)
    assert not model.ready
    client = client_for(app)
    for path in ("/v2/health/ready", "/v2/models/wine/ready", "/ping", "/v1/models/wine"):
        r = client.get(path)
        assert r.status_code == 503, path
        assert r.headers["Retry-After"] == "1"
        assert "sha256" in r.get_json()["error"]
    r = client.post(V2, data=json.dumps(v2()), content_type="application/json")
    assert r.status_code == 503 and "sha256" in r.get_json()["error"]
    assert client.get("/v2/health/live").status_code == 200


def test_unexpected_fault_is_generic_500_with_logged_traceback(models_dir, caplog):
    app, model = make_app(models_dir)

    class Exploding:
        n_features_in_ = 13

        def predict(self, X):
            raise RuntimeError("secret internals")

    model.artifact.runtime.estimator = Exploding()
    r = client_for(app).post("/v1/models/wine:predict", json={"instances": [ROW]}, headers={"X-Request-Id": "rid-1"})
    assert r.status_code == 500
    assert "secret" not in r.get_data(as_text=True)
    assert "rid-1" in r.get_json()["error"]
    # one JSON line per event (json_log, the format of every function): the id and the traceback are its fields
    assert any(getattr(rec, "fields", {}).get("request_id") == "rid-1" and "secret internals" in rec.fields["traceback"]
               for rec in caplog.records)
