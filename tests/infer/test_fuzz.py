"""Property: whatever a client sends to any POST endpoint, the answer is never a 500; a 4xx
always carries a JSON reason, and a 2xx carries predictions. Hypothesis explores both
arbitrary bodies and near-valid ones (right shape of request, wrong details)."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infer.tensors import DATATYPES

POST_PATHS = [
    "/v2/models/wine/infer",
    "/v2/models/wine/versions/1/infer",
    "/v2/models/other/infer",
    "/v1/models/wine:predict",
    "/invocations",
]
CONTENT_TYPES = ["application/json", "text/csv", "text/plain", "application/x-www-form-urlencoded", "", "application/json; charset=utf-8"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
)
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=6), inner, max_size=4)), max_leaves=40)
shapes = st.lists(st.integers(min_value=-1, max_value=14), min_size=0, max_size=3)
rows = st.lists(st.lists(st.one_of(st.floats(-1e6, 1e6), st.integers(-5, 2000), scalars), min_size=0, max_size=14), min_size=0, max_size=4)

tensors = st.fixed_dictionaries(
    {"name": st.one_of(st.text(max_size=5), st.integers()), "shape": st.one_of(shapes, json_values),
     "datatype": st.one_of(st.sampled_from(sorted(DATATYPES)), st.text(max_size=5)),
     "data": st.one_of(rows, st.lists(st.one_of(st.floats(-1e6, 1e6), scalars), max_size=30), json_values)},
    optional={"parameters": json_values},
)
v2_bodies = st.fixed_dictionaries(
    {"inputs": st.one_of(st.lists(tensors, max_size=3), json_values)},
    optional={"id": json_values, "parameters": json_values,
              "outputs": st.one_of(st.lists(st.fixed_dictionaries({"name": st.sampled_from(["predict", "predict_proba", "x"])}), max_size=3), json_values)},
)
tabular_bodies = st.dictionaries(
    st.sampled_from(["instances", "inputs", "dataframe_split", "dataframe_records", "params", "other"]),
    st.one_of(rows, json_values, st.fixed_dictionaries({"columns": json_values, "data": rows}),
              st.lists(st.dictionaries(st.sampled_from(["a", "b", "c"]), scalars, max_size=3), max_size=3)),
    max_size=2,
)
csv_bodies = st.lists(st.lists(st.one_of(st.floats(-1e3, 1e3).map(str), st.text(max_size=4)), max_size=14), max_size=4).map(
    lambda table: "\n".join(",".join(row) for row in table).encode("utf-8", "surrogatepass")
)
bodies = st.one_of(
    v2_bodies.map(lambda d: json.dumps(d).encode()),
    tabular_bodies.map(lambda d: json.dumps(d).encode()),
    json_values.map(lambda d: json.dumps(d).encode()),
    csv_bodies,
    st.binary(max_size=200),
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(POST_PATHS), content_type=st.sampled_from(CONTENT_TYPES), body=bodies)
def test_no_request_gets_a_500(client, path, content_type, body):
    r = client.post(path, data=body, content_type=content_type or None)
    assert r.status_code < 500, r.get_data(as_text=True)
    doc = json.loads(r.get_data())
    if r.status_code >= 400:
        assert isinstance(doc["error"], str) and doc["error"]
    else:
        assert "outputs" in doc or "predictions" in doc


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(POST_PATHS), content_type=st.sampled_from(CONTENT_TYPES), body=bodies)
def test_no_request_gets_a_500_from_the_onnx_runtime(onnx_client, path, content_type, body):
    test_no_request_gets_a_500.hypothesis.inner_test(onnx_client, path, content_type, body)
