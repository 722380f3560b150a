"""The pool under hostile callers and operator mistakes, and at 10,000 entries: the repository API only on the control port; a model's host as its boundary; shapes
checked before allocation and decoding memory admitted before it is spent; memory charged from
what a load took; the repository re-read without a restart; loads under a deadline; unload
during a load; DNS-label names; 405 with Allow; lazy entry verification; bounded metric labels.

In-process through the same WSGI app gunicorn serves (werkzeug's client), except where the
server kind is the point (func-python, the gunicorn pool's control port)."""

from __future__ import annotations

import json
import shutil
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import requests
from sklearn.datasets import load_wine

from infer.app import build_pool
from infer.settings import InferSettings
from localmode.processes import free_port, wait_until
from tests.infer.conftest import client_for
from tests.infer.test_pool import make_repository, slow_repository, start_pool  # noqa: F401 (a fixture)
from tests.support.functions import start_function

WINE = load_wine().data[:3]
V2 = {"inputs": [{"name": "x", "shape": [3, 13], "datatype": "FP64", "data": WINE.ravel().tolist()}]}


def pool_in_process(repo: Path, **env: str):
    from infer.control import control_app

    settings = InferSettings.from_env({"MODEL_REPOSITORY": str(repo), "POOL_MEMORY_ACCOUNTING": "estimate", **env})
    app, pool = build_pool(settings)
    assert pool.verify(), pool.reason
    return client_for(app), client_for(control_app(pool)), pool


@pytest.fixture
def three(models_dir, tmp_path):
    return make_repository(models_dir, tmp_path / "repo", copies={"wine-b": "wine"})


def host(model: str) -> dict[str, str]:
    return {"Host": f"{model}.models.example.com"}


# -- 1. the repository API is the control plane's ------------------------------------------------
def test_the_repository_api_answers_only_on_the_control_port(three):
    serving, control, pool = pool_in_process(three)
    assert control.post("/v2/repository/models/wine/load").status_code == 200
    for path in ("/v2/repository/index", "/v2/repository/models/wine/unload", "/v2/repository/models/wine/load"):
        for headers in (host("diabetes"), host("wine"), {}):
            r = serving.post(path, headers=headers, json={})
            assert r.status_code == 404, (path, headers)
            assert "wine-b" not in r.get_data(as_text=True)
    assert [row["name"] for row in control.post("/v2/repository/index", json={"ready": True}).get_json()] == ["wine"]
    # the control port serves nothing else
    assert control.post("/v2/models/wine/infer", json=V2).status_code == 404
    assert control.get("/v2/health/ready").status_code == 200


def test_the_gunicorn_pool_serves_its_control_port_and_scale_calls_it_there(models_dir, tmp_path, start_pool):
    from scale.pool_client import PoolClient, control_url

    pool = start_pool(make_repository(models_dir, tmp_path / "repo"))
    assert requests.post(f"{pool.url}/v2/repository/models/wine/unload", headers=host("diabetes"), timeout=5).status_code == 404
    client = PoolClient(2.0, control_url=pool.control_url)
    client.load("http://infer-pool.models.svc.cluster.local", "wine")
    assert client.loaded("http://infer-pool.models.svc.cluster.local") == {"wine"}
    assert control_url("http://{name}-control.{namespace}.svc.cluster.local:8081",
                       "http://infer-pool.models.svc.cluster.local") == "http://infer-pool-control.models.svc.cluster.local:8081"


# -- 2. a model's host is its boundary ----------------------------------------------------------------
def test_a_model_host_reaches_only_its_model_whatever_names_another(three):
    serving, control, _ = pool_in_process(three)
    ok = serving.post("/v2/models/diabetes/infer", headers=host("diabetes"), json={
        "inputs": [{"name": "x", "shape": [1, 10], "datatype": "FP64", "data": [0.01] * 10}]})
    assert ok.status_code == 200
    attempts = [
        ("/v2/models/wine/infer", host("diabetes"), V2),
        ("/v2/models/wine/versions/1/infer", host("diabetes"), V2),
        ("/v1/models/wine:predict", host("diabetes"), {"instances": WINE.tolist()}),
        ("/invocations", {**host("diabetes"), "X-Model-Name": "wine"}, {"instances": WINE.tolist()}),
        ("/invocations", {**host("diabetes"), "X-Forwarded-Host": "wine.models.example.com"}, {"instances": WINE.tolist()}),
        ("/v2/models/diabetes/infer", {**host("diabetes"), "X-Forwarded-Host": "wine.models.example.com"}, V2),
        ("/v2/models/wine/infer", {"Host": "infer-pool.models.svc", "K-Original-Host": "diabetes.models.example.com"}, V2),
        ("/invocations", {"Host": "infer-pool.models.svc", "X-Forwarded-Host": "diabetes.models.example.com",
                          "X-Model-Name": "wine"}, {"instances": WINE.tolist()}),
    ]
    for path, headers, body in attempts:
        r = serving.post(path, headers=headers, json=body)
        assert r.status_code == 404, (path, headers, r.get_data(as_text=True))
        assert "wine-b" not in r.get_data(as_text=True)  # no listing of the other tenants
    assert serving.get("/v2/models/wine", headers=host("diabetes")).status_code == 404
    assert serving.get("/v1/models", headers=host("diabetes")).get_json() == {"models": ["diabetes"]}
    assert serving.get("/metrics", headers=host("diabetes")).status_code == 404  # no other model's series
    assert serving.get("/metrics").status_code == 200  # Prometheus scrapes the pod's address
    # nothing loaded for the attempts: only diabetes is
    assert [r["name"] for r in control.post("/v2/repository/index", json={"ready": True}).get_json()] == ["diabetes"]
    # a host that names no model (the pool's own, in the cluster) still serves by name
    assert serving.post("/v2/models/wine/infer", headers={"Host": "infer-pool.models.svc"}, json=V2).status_code == 200


def test_the_routing_setting_opens_or_closes_hosts_that_name_no_model(three):
    opened, _, _ = pool_in_process(three, POOL_ROUTING="open")
    assert opened.post("/v2/models/wine/infer", headers=host("diabetes"), json=V2).status_code == 200
    closed, _, _ = pool_in_process(three, POOL_ROUTING="host-only")
    assert closed.post("/v2/models/wine/infer", headers={"Host": "127.0.0.1:8080"}, json=V2).status_code == 404
    assert closed.post("/v2/models/wine/infer", headers=host("wine"), json=V2).status_code == 200
    assert closed.get("/v2/health/ready", headers={"Host": "10.0.0.7:8080"}).status_code == 200  # probes everywhere


# -- 3. bounded work per request -------------------------------------------------------------------------
def _hostile_bodies():
    header = json.dumps({"inputs": [{"name": "x", "shape": [0, 2**62], "datatype": "FP64",
                                     "parameters": {"binary_data_size": 0}}]}).encode()
    deep = [1] + [1] * 64
    return [
        ({"inputs": [{"name": "x", "shape": [0, 2**62], "datatype": "FP64", "data": []}]}, None),
        ({"inputs": [{"name": "x", "shape": deep, "datatype": "FP64", "data": [0.0]}]}, None),
        ({"inputs": [{"name": "x", "shape": [2**31, 2**31], "datatype": "UINT8", "data": [1]}]}, None),
        (header, {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}),
    ]


def test_hostile_shapes_are_400s_on_the_pool_and_the_one_model_server(three, onnx_client):
    serving, _, _ = pool_in_process(three)
    for client in (serving, onnx_client):
        for body, headers in _hostile_bodies():
            if headers:
                r = client.post("/v2/models/wine/infer", data=body, headers={**host("wine"), **headers})
            else:
                r = client.post("/v2/models/wine/infer", json=body, headers=host("wine"))
            assert r.status_code == 400, r.get_data(as_text=True)
            assert "shape" in r.get_json()["error"] or "dimension" in r.get_json()["error"]


def test_hostile_shapes_are_400s_under_func_python(models_dir, tmp_path):
    fn = start_function("infer", {"MODEL_ROOT": str(models_dir), "MODEL_PATH": "wine.onnx"}, tmp_path / "infer.log")
    try:
        for body, headers in _hostile_bodies():
            if headers:
                r = requests.post(f"{fn.url}/v2/models/wine/infer", data=body, headers=headers, timeout=5)
            else:
                r = requests.post(f"{fn.url}/v2/models/wine/infer", json=body, timeout=5)
            assert r.status_code == 400, r.text
    finally:
        fn.stop()


def _peak(fn) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def test_csv_decoding_costs_a_bounded_multiple_of_the_body(models_dir):
    from infer.app import build
    from infer.http_io import Request

    app, model = build(InferSettings.from_env({"MODEL_ROOT": str(models_dir), "MODEL_PATH": "wine.onnx",
                                               "REQUEST_MEMORY_MB": "1024"}))
    assert model.load()
    body = ("a,b,c,d,e,f,g,h,i,j,k,l,m\n" + "1,2,3,4,5,6,7,8,9,1,2,3,4\n" * 50_000).encode()
    request = Request("POST", "/invocations", {"content-type": "text/csv"}, raw_body=body)
    replies = []
    peak = _peak(lambda: replies.append(app.plane.handle(request)))
    assert replies[0].status == 200
    assert peak < 20 * len(body), peak / len(body)  # was ~38x: a list of strings per row, then floats


def test_admission_charges_at_least_what_decoding_takes_and_refuses_what_never_fits(models_dir):
    from infer.app import build
    from infer.http_io import Request

    settings = InferSettings.from_env({"MODEL_ROOT": str(models_dir), "MODEL_PATH": "wine.onnx", "REQUEST_MEMORY_MB": "64"})
    app, model = build(settings)
    assert model.load()
    admission = app.plane.admission
    empty_lists = json.dumps({**V2, "parameters": {"junk": [[]] * 300_000}}, separators=(",", ":")).encode()
    floats = json.dumps({"inputs": [{"name": "x", "shape": [20_000, 13], "datatype": "FP64", "data": [0.5] * 260_000}]},
                        separators=(",", ":")).encode()
    csv = ("a,b,c,d,e,f,g,h,i,j,k,l,m\n" + "1,1,1,1,1,1,1,1,1,1,1,1,1\n" * 20_000).encode()
    for body, headers, path in ((empty_lists, {"content-type": "application/json"}, "/v2/models/wine/infer"),
                                (floats, {"content-type": "application/json"}, "/v2/models/wine/infer"),
                                (csv, {"content-type": "text/csv"}, "/invocations")):
        peak = _peak(lambda: app.plane.handle(Request("POST", path, headers, raw_body=body)))
        assert admission.decoding_cost(body, headers) >= peak, (path, peak / len(body))
    client = client_for(app)
    big = json.dumps({**V2, "parameters": {"junk": [[]] * 400_000}}, separators=(",", ":")).encode()
    r = client.post("/v2/models/wine/infer", data=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "REQUEST_MEMORY_MB" in r.get_json()["error"]
    # the budget held by others: a retryable 503, not a wait without end
    assert admission.try_acquire(admission.budget)
    try:
        r = client.post("/v2/models/wine/infer", json=V2)
        assert r.status_code == 503 and r.headers["Retry-After"] == "1"
    finally:
        admission.release(admission.budget)
    assert client.post("/v2/models/wine/infer", json=V2).status_code == 200


def test_large_bodies_at_once_take_turns_rather_than_starve_each_other(models_dir):
    """Each request held its read reservation while waiting for its decoding one, and that while
    waiting for its predict one: four large CSV bodies at once each held a share, none could grow
    and every one got a 503 (the pool's 8 clients looping its largest CSV body: 58 of 58)."""
    from infer.app import build

    app, model = build(InferSettings.from_env({"MODEL_ROOT": str(models_dir), "MODEL_PATH": "wine.onnx",
                                               "REQUEST_MEMORY_MB": "64"}))
    assert model.load()
    admission = app.plane.admission
    admission.wait_s = 60.0  # turns, not a race against the clock: a request waits until one fits
    # 1.5 MiB: decoding (~24 MiB) and predicting (~25 MiB) it fit the budget, twice over they do not
    body = ("a,b,c,d,e,f,g,h,i,j,k,l,m\n" + "1,1,1,1,1,1,1,1,1,1,1,1,1\n" * 60_000).encode()
    assert client_for(app).post("/invocations", data=body, headers={"Content-Type": "text/csv"}).status_code == 200
    barrier = threading.Barrier(4)
    codes: list[int] = []

    def call() -> None:
        client = client_for(app)
        barrier.wait()
        codes.append(client.post("/invocations", data=body, headers={"Content-Type": "text/csv"}).status_code)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert codes == [200] * 4, codes
    assert admission.used == 0


def test_large_bodies_at_once_take_turns_under_the_asgi_adapter_too(models_dir):
    """The same four bodies through the adapter func-python serves (reservations polled on the
    event loop, answers off it): every one answered 200, none a 503."""
    import asyncio

    from infer.app import AsgiApp, build

    wsgi, model = build(InferSettings.from_env({"MODEL_ROOT": str(models_dir), "MODEL_PATH": "wine.onnx",
                                                "REQUEST_MEMORY_MB": "64"}))
    assert model.load()
    app = AsgiApp(wsgi.plane)
    app.plane.admission.wait_s = 60.0
    body = ("a,b,c,d,e,f,g,h,i,j,k,l,m\n" + "1,1,1,1,1,1,1,1,1,1,1,1,1\n" * 60_000).encode()

    async def call() -> int:
        scope = {"type": "http", "method": "POST", "path": "/invocations",
                 "headers": [(b"content-type", b"text/csv"), (b"content-length", str(len(body)).encode())]}
        sent: list[dict] = []

        async def receive() -> dict:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        await app(scope, receive, send)
        return sent[0]["status"]

    async def four() -> list[int]:
        return list(await asyncio.gather(*(call() for _ in range(4))))

    assert asyncio.run(four()) == [200] * 4
    assert app.plane.admission.used == 0


def test_a_body_that_can_never_be_decoded_and_predicted_within_the_budget_is_a_413_at_once(models_dir):
    """Its decoding fit the budget and its predicting did, but not both: it waited for memory it
    held itself and was answered a retryable 503, whatever the load, retried for nothing."""
    from infer.app import build

    app, model = build(InferSettings.from_env({"MODEL_ROOT": str(models_dir), "MODEL_PATH": "wine.onnx",
                                               "REQUEST_MEMORY_MB": "64"}))
    assert model.load()
    # 3.7 MiB: decoding it (~60 MiB) fits, and so does predicting it, but not the two
    body = ("a,b,c,d,e,f,g,h,i,j,k,l,m\n" + "1,1,1,1,1,1,1,1,1,1,1,1,1\n" * 150_000).encode()
    r = client_for(app).post("/invocations", data=body, headers={"Content-Type": "text/csv"})
    assert r.status_code == 413 and "REQUEST_MEMORY_MB" in r.get_json()["error"], (r.status_code, r.get_data()[:200])
    assert app.plane.admission.used == 0


def test_a_batch_predicted_in_slices_answers_what_it_answers_whole(models_dir):
    """Large batches are predicted a slice at a time (the runtime's memory bounded by a slice):
    same values, same order, same shapes, for labels and probabilities alike."""
    from infer.app import build
    from infer.dataplane import predict_in_slices

    app, model = build(InferSettings.from_env({"MODEL_ROOT": str(models_dir), "MODEL_PATH": "wine.onnx"}))
    assert model.load()
    rows = np.vstack([load_wine().data] * 6)  # 1,068 rows: 13 x 82 + 2
    outputs = list(model.outputs)
    whole = model.predict(rows, outputs)
    sliced = predict_in_slices(model, rows, outputs, 13 * 82)
    assert [p.name for p in sliced] == [p.name for p in whole] == outputs
    for a, b in zip(sliced, whole):
        assert a.values.shape == b.values.shape and a.values.dtype == b.values.dtype
        np.testing.assert_array_equal(a.values, b.values)


@pytest.mark.parametrize("busy", [False, True])
def test_a_refused_body_is_freed_when_answered_not_at_the_next_garbage_collection(models_dir, busy):
    """A refusal (413 never fits, 503 busy) is kept on the request; its traceback held the request
    and its body in a cycle, so refused bodies piled up until the cyclic collector ran: 8 clients
    looping the largest binary body took the pool from 46 to 897 MiB (limit 640)."""
    import gc

    from infer.app import build
    from infer.http_io import Request

    settings = InferSettings.from_env({"MODEL_ROOT": str(models_dir), "MODEL_PATH": "wine.onnx", "REQUEST_MEMORY_MB": "64"})
    app, model = build(settings)
    assert model.load()
    client = client_for(app)
    rows = 4 * 2**20 // 13
    header = json.dumps({"inputs": [{"name": "x", "shape": [rows, 13], "datatype": "UINT8",
                                     "parameters": {"binary_data_size": rows * 13}}]}).encode()
    body = header + np.ones(rows * 13, dtype=np.uint8).tobytes()
    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))}
    admission = app.plane.admission
    gc.collect()
    gc.disable()
    try:
        if busy:
            assert admission.try_acquire(admission.budget)
        try:
            status = client.post("/v2/models/wine/infer", data=body, headers=headers).status_code
        finally:
            if busy:
                admission.release(admission.budget)
        assert status == (503 if busy else 413)
        left = [o for o in gc.get_objects() if isinstance(o, Request)]
        assert left == [], f"{len(left)} answered request(s) kept alive by a reference cycle"
    finally:
        gc.enable()


def _hungry_onnx(path: Path, doubles: int) -> None:
    """A tiny ONNX model (a few hundred bytes) whose session allocates `doubles` float64 at load
    (a ConstantOfShape folded into a constant), the kind of file the size estimate misjudges."""
    from onnx import TensorProto, helper

    shape = helper.make_tensor("shape", TensorProto.INT64, [1], [doubles])
    nodes = [
        helper.make_node("ConstantOfShape", ["shape"], ["big"], value=helper.make_tensor("v", TensorProto.DOUBLE, [1], [0.0])),
        helper.make_node("ReduceSum", ["big"], ["zero"], keepdims=0),
        helper.make_node("ReduceSum", ["x", "axes"], ["s"], keepdims=0),
        helper.make_node("Add", ["s", "zero"], ["variable"]),
    ]
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    graph = helper.make_graph(nodes, "hungry", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [None, 13])],
                              [helper.make_tensor_value_info("variable", TensorProto.DOUBLE, [None])], [shape, axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    path.write_bytes(model.SerializeToString())


def test_a_model_is_charged_what_its_load_took_not_its_file_size(models_dir, tmp_path):
    import hashlib

    repo = make_repository(models_dir, tmp_path / "repo")
    _hungry_onnx(repo / "hungry.onnx", 12_000_000)  # ~92 MB at load, from a ~300-byte file
    manifest = json.loads((repo / "manifest.json").read_text())
    manifest["artifacts"].append({"name": "hungry", "version": "1", "format": "onnx", "path": "hungry.onnx",
                                  "sha256": hashlib.sha256((repo / "hungry.onnx").read_bytes()).hexdigest(),
                                  "server": {"outputs": {"predict": "variable"}, "n_features": 13}})
    (repo / "manifest.json").write_text(json.dumps(manifest))
    assert (repo / "hungry.onnx").stat().st_size < 1024
    serving, control, pool = pool_in_process(repo, POOL_MEMORY_MB="48", POOL_MEMORY_ACCOUNTING="measured")
    r = control.post("/v2/repository/models/hungry/load")
    assert r.status_code == 400 and "took" in r.get_json()["error"] and "POOL_MEMORY_MB" in r.get_json()["error"]
    assert pool._used == 0  # nothing left reserved for it
    assert serving.post("/v2/models/wine/infer", json=V2).status_code == 200
    assert 0 < pool._used <= pool.budget


# -- 4. repository changes without a restart --------------------------------------------------------
def test_the_repository_is_reread_new_removed_and_republished_models_follow(models_dir, three):
    serving, control, pool = pool_in_process(three)
    assert serving.post("/v2/models/wine/infer", json=V2).status_code == 200
    manifest = json.loads((three / "manifest.json").read_text())
    by_name = {e["name"]: e for e in manifest["artifacts"]}
    # republish wine in place with the diabetes model (another file, another sha), drop wine-b, add wine-c
    shutil.copy(models_dir / "diabetes.onnx", three / "wine.onnx")
    by_name["wine"] = {**by_name["diabetes"], "name": "wine", "path": "wine.onnx"}
    shutil.copy(models_dir / "wine.onnx", three / "wine-c.onnx")
    by_name["wine-c"] = {**by_name["wine-b"], "name": "wine-c", "path": "wine-c.onnx"}
    del by_name["wine-b"]
    (three / "manifest.json").write_text(json.dumps({**manifest, "artifacts": list(by_name.values())}))
    assert pool.refresh()
    ten = {"inputs": [{"name": "x", "shape": [1, 10], "datatype": "FP64", "data": [0.01] * 10}]}
    assert serving.post("/v2/models/wine/infer", json=ten).status_code == 200  # the new bytes, verified
    assert serving.post("/v2/models/wine-c/infer", json=V2).status_code == 200
    assert serving.post("/v2/models/wine-b/infer", json=V2).status_code == 404
    assert {r["name"] for r in control.post("/v2/repository/index").get_json()} == {"wine", "wine-c", "diabetes"}
    # a change that does not verify keeps the last good repository serving, and readiness true
    (three / "manifest.json").write_text(json.dumps({"artifacts": [{"name": "Bad Name", "path": "x", "sha256": "0" * 64}]}))
    assert not pool.refresh()
    assert serving.get("/v2/health/ready").status_code == 200
    assert serving.post("/v2/models/wine-c/infer", json=V2).status_code == 200


def test_the_poll_notices_a_new_model_in_a_running_server(models_dir, tmp_path, start_pool):
    repo = make_repository(models_dir, tmp_path / "repo")
    pool = start_pool(repo, {"POOL_REPOSITORY_POLL_SECONDS": "0.2"})
    assert requests.post(f"{pool.url}/v2/models/wine-b/infer", json=V2, timeout=5).status_code == 404
    manifest = json.loads((repo / "manifest.json").read_text())
    (wine,) = [e for e in manifest["artifacts"] if e["name"] == "wine"]
    shutil.copy(repo / "wine.onnx", repo / "wine-b.onnx")
    manifest["artifacts"].append({**wine, "name": "wine-b", "path": "wine-b.onnx"})
    (repo / "manifest.json").write_text(json.dumps(manifest))
    wait_until(lambda: requests.post(f"{pool.url}/v2/models/wine-b/infer", json=V2, timeout=5).status_code == 200,
               10, "the new model served")


# -- 5. deadlines, unload during a load, names, 405 ---------------------------------------------------
def test_a_load_past_its_deadline_is_given_up_and_the_others_load(models_dir, tmp_path):
    repo, pin = slow_repository(models_dir, tmp_path / "repo", 3.0)
    shutil.copy(models_dir / "wine.onnx", repo / "wine.onnx")
    manifest = json.loads((repo / "manifest.json").read_text())
    wine = [e for e in json.loads((models_dir / "manifest.json").read_text())["artifacts"]
            if e["name"] == "wine" and e["format"] == "onnx"]
    manifest["artifacts"] += wine
    (repo / "manifest.json").write_text(json.dumps(manifest))
    import hashlib

    pin = hashlib.sha256((repo / "manifest.json").read_bytes()).hexdigest()
    serving, control, pool = pool_in_process(repo, MODEL_REPOSITORY_SHA256=pin, POOL_LOAD_DEADLINE_SECONDS="0.5",
                                             POOL_LOAD_WAIT_SECONDS="2")
    started = time.monotonic()
    r = serving.post("/v2/models/slow/infer", json=V2)
    assert r.status_code == 503 and "POOL_LOAD_DEADLINE_SECONDS" in r.get_json()["error"]
    assert time.monotonic() - started < 1.5
    assert serving.post("/v2/models/wine/infer", json=V2).status_code == 200  # not held up by the stuck load
    # while the stuck thread lives, no second load of it starts
    r = control.post("/v2/repository/models/slow/load")
    assert r.status_code == 400 and "still running" in r.get_json()["error"]


def test_an_unload_during_a_load_takes_effect_when_it_ends(models_dir, tmp_path):
    repo, pin = slow_repository(models_dir, tmp_path / "repo", 1.0)
    serving, control, pool = pool_in_process(repo, MODEL_REPOSITORY_SHA256=pin)
    loader = threading.Thread(target=lambda: control.post("/v2/repository/models/slow/load"))
    loader.start()
    wait_until(lambda: pool.index()[0]["state"] == "LOADING", 5, "the load to start")
    r = control.post("/v2/repository/models/slow/unload")
    assert r.status_code == 200 and r.get_json()["parameters"]["when"] == "its load in flight ends"
    loader.join()
    (row,) = pool.index()
    assert row["state"] == "UNAVAILABLE" and "unloaded" in row["reason"]
    assert pool._used == 0


def test_405_with_allow_wherever_a_path_exists(three):
    serving, _, _ = pool_in_process(three)
    r = serving.open("/v2/", method="TRACE")
    assert r.status_code == 405 and set(r.headers["Allow"].split(", ")) == {"GET", "HEAD"}
    assert serving.get("/v2/").status_code == 200
    r = serving.delete("/v2/models/wine/infer", headers=host("wine"))
    assert r.status_code == 405 and r.headers["Allow"] == "POST"


# -- 6. 10,000 entries: lazy verification, memory per entry, bounded labels ------------------------------
def big_repository(models_dir: Path, out: Path, n: int) -> Path:
    repo = make_repository(models_dir, out)
    manifest = json.loads((repo / "manifest.json").read_text())
    (wine,) = [e for e in manifest["artifacts"] if e["name"] == "wine"]
    manifest["artifacts"] += [{**wine, "name": f"m{i:05d}"} for i in range(n)]  # one file, many names
    (repo / "manifest.json").write_text(json.dumps(manifest))
    return repo


def test_a_10000_entry_repository_is_verified_from_its_manifest_at_under_2_kib_per_entry(models_dir, tmp_path):
    from infer.pool import ModelPool

    repo = big_repository(models_dir, tmp_path / "repo", 10_000)
    settings = InferSettings.from_env({"MODEL_REPOSITORY": str(repo)})
    pool = ModelPool(settings)
    pool._warm = lambda repository: None  # the runtime import is not the entries' memory
    tracemalloc.start()
    try:
        assert pool.verify()
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert held / 10_002 < 2048, held / 10_002
    # verified from the manifest: a file tampered with after start is refused at its load, never served
    from infer.errors import ModelUnavailable

    data = bytearray((repo / "wine.onnx").read_bytes())
    data[-1] ^= 0xFF
    (repo / "wine.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelUnavailable, match="sha256"):
        pool.get("m00042")
    assert pool.get("diabetes").ready


def test_a_missing_file_does_not_keep_the_pool_from_ready_it_is_refused_at_its_load(models_dir, tmp_path):
    repo = make_repository(models_dir, tmp_path / "repo")
    manifest = json.loads((repo / "manifest.json").read_text())
    (wine,) = [e for e in manifest["artifacts"] if e["name"] == "wine"]
    manifest["artifacts"].append({**wine, "name": "gone", "path": "gone.onnx"})
    (repo / "manifest.json").write_text(json.dumps(manifest))
    serving, _, _ = pool_in_process(repo)
    assert serving.get("/v2/health/ready").status_code == 200
    r = serving.post("/v2/models/gone/infer", json=V2)
    assert r.status_code == 503 and "does not exist" in r.get_json()["error"]
    assert serving.post("/v2/models/wine/infer", json=V2).status_code == 200


def test_per_model_metric_labels_are_capped(models_dir, tmp_path):
    from infer import metrics

    repo = big_repository(models_dir, tmp_path / "repo", 30)
    serving, _, _ = pool_in_process(repo, METRIC_MODELS="5")
    metrics._model_labels.clear()  # the process's earlier tests used some
    try:
        for i in range(30):
            serving.get(f"/v2/models/m{i:05d}/ready")
            serving.post(f"/v2/models/m{i:05d}/infer", json=V2)  # loads it: load metrics per model too
        text = serving.get("/metrics").get_data(as_text=True)
    finally:
        metrics.cap_model_labels(200)
    requested = {f"m{i:05d}" for i in range(30)}
    for family in ("infer_requests_total{", "infer_model_load_seconds{", "infer_pool_model_loads_total{"):
        models = {line.split('model="', 1)[1].split('"', 1)[0] for line in text.splitlines() if line.startswith(family)}
        assert len(models & requested) <= 5, family  # (the registry is the process's: other tests' series too)
    assert metrics.OTHER_MODELS in {line.split('model="', 1)[1].split('"', 1)[0] for line in text.splitlines()
                                    if line.startswith("infer_requests_total{")}
