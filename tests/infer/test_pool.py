"""The model pool (MODEL_REPOSITORY) on real processes over real HTTP: every model of the
repository served by name through tritonclient (its defaults: binary tensors), V1 and MLflow
(the model chosen by X-Model-Name or the host the client called), loaded on first request,
within a memory budget (LRU), once under concurrent first requests, pre-loaded and unloaded
through the V2 repository extension, each behind its own sha256 gate; and the metrics scraped
after real requests."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import pytest
import requests
import tritonclient.http as httpclient
from prometheus_client.parser import text_string_to_metric_families
from sklearn.datasets import load_diabetes, load_wine
from tritonclient.utils import InferenceServerException

from infer.pool import footprint_bytes
from infer.repository import read_repository
from localmode.processes import free_port, stop, wait_until
from tests.support.functions import start_function
from tests.support.servers import ROOT

WINE = load_wine().data[::7]
DIABETES = load_diabetes(as_frame=True).data.iloc[::9]


@dataclass
class Pool:
    url: str
    process: subprocess.Popen
    log: Path
    spawned: float
    control_url: str = ""
    """The control port (POOL_CONTROL_PORT): the repository API is there, not at `url`."""

    @property
    def client(self) -> httpclient.InferenceServerClient:
        return httpclient.InferenceServerClient(self.url.removeprefix("http://"))

    @property
    def control(self) -> httpclient.InferenceServerClient:
        return httpclient.InferenceServerClient(self.control_url.removeprefix("http://"))

    def metrics(self) -> dict[tuple[str, tuple], float]:
        text = requests.get(f"{self.url}/metrics", timeout=5).text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics().get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def start_pool(tmp_path):
    started: list[Pool] = []

    def start(repository: Path, env: dict[str, str] | None = None, wait_ready: bool = True) -> Pool:
        import os

        port, control = free_port(), free_port()
        log = tmp_path / f"pool-{port}.log"
        spawned = time.time()
        env = {"POOL_CONTROL_PORT": str(control), "POOL_MEMORY_ACCOUNTING": "estimate", **(env or {})}
        proc = subprocess.Popen(
            [sys.executable, "-m", "infer.serve", "--repository", str(repository), "--port", str(port)],
            env={**os.environ, "PYTHONPATH": str(ROOT / "functions" / "infer"), **env},
            stdout=log.open("wb"), stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        probe = "/v2/health/ready" if wait_ready else "/v2/health/live"
        wait_until(lambda: requests.get(url + probe, timeout=1).status_code == 200, 60, "pool server", proc)
        control_url = f"http://127.0.0.1:{control}"
        wait_until(lambda: requests.get(control_url + "/v2/health/live", timeout=1).status_code == 200, 30,
                   "pool control port", proc)
        pool = Pool(url, proc, log, spawned, control_url)
        started.append(pool)
        return pool

    yield start
    for pool in started:
        stop(pool.process)


def make_repository(models_dir: Path, out: Path, extra: list[dict] | None = None, formats: tuple = ("onnx",),
                    copies: dict[str, str] | None = None) -> Path:
    """A repository like `make models` writes (its manifest shape), with `copies` (new name ->
    existing name) served from copied ONNX files and `extra` entries added as they are."""
    out.mkdir(parents=True)
    manifest = json.loads((models_dir / "manifest.json").read_text())
    entries = [e for e in manifest["artifacts"] if e["format"] in formats]
    for entry in entries:
        source = models_dir / entry["path"]
        (shutil.copytree if source.is_dir() else shutil.copy)(source, out / entry["path"])
    for new, old in (copies or {}).items():
        (original,) = [e for e in entries if e["name"] == old and e["format"] == "onnx"]
        shutil.copy(models_dir / original["path"], out / f"{new}.onnx")
        entries.append({**original, "name": new, "path": f"{new}.onnx"})
    manifest["artifacts"] = entries + (extra or [])
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out


def infer_v2(client: httpclient.InferenceServerClient, model: str, X: np.ndarray) -> np.ndarray:
    tensor = httpclient.InferInput("input-0", list(X.shape), "FP64")
    tensor.set_data_from_numpy(np.ascontiguousarray(X, dtype=np.float64))  # binary_data=True by default
    return client.infer(model, [tensor]).as_numpy("predict")


def index(pool: Pool) -> dict[str, dict]:
    return {row["name"]: row for row in pool.control.get_model_repository_index()}


def test_pool_serves_every_model_by_name_through_v2_v1_and_mlflow(models_dir, tmp_path, start_pool):
    pool = start_pool(make_repository(models_dir, tmp_path / "repo"))
    wine = joblib.load(models_dir / "wine.joblib")
    diabetes = joblib.load(models_dir / "diabetes.joblib")
    client = pool.client
    assert client.is_server_ready()
    assert "model_repository" in client.get_server_metadata()["extensions"]
    # ready before any model is loaded; a model is ready only once loaded, and asking does not load it
    assert not client.is_model_ready("wine") and not client.is_model_ready("diabetes")
    assert {r["state"] for r in index(pool).values()} == {"UNAVAILABLE"}
    assert pool.metric("infer_pool_models_loaded") == 0

    np.testing.assert_array_equal(infer_v2(client, "wine", WINE), wine.predict(WINE))
    assert client.is_model_ready("wine") and not client.is_model_ready("diabetes")
    np.testing.assert_allclose(infer_v2(client, "diabetes", DIABETES.to_numpy()), diabetes.predict(DIABETES), rtol=1e-9)
    np.testing.assert_allclose(infer_v2(client, "diabetes", DIABETES.to_numpy()), diabetes.predict(DIABETES), rtol=1e-9)
    meta = client.get_model_metadata("diabetes", "1")
    assert meta["name"] == "diabetes" and meta["inputs"][0]["parameters"]["feature_names"] == list(DIABETES.columns)

    r = requests.post(f"{pool.url}/v1/models/wine:predict", json={"instances": WINE.tolist()}, timeout=5)
    assert r.status_code == 200 and r.json()["predictions"] == wine.predict(WINE).tolist()
    assert requests.get(f"{pool.url}/v1/models", timeout=5).json() == {"models": ["diabetes", "wine"]}

    # /invocations: X-Model-Name, else the host the client called (X-Forwarded-Host, then Host)
    records = {"dataframe_records": DIABETES.to_dict(orient="records")}
    for headers in ({"X-Model-Name": "diabetes"}, {"Host": "diabetes.models.example.com"},
                    {"Host": "infer-pool.models.example.com", "X-Forwarded-Host": "diabetes.models.example.com:443"}):
        r = requests.post(f"{pool.url}/invocations", json=records, headers=headers, timeout=5)
        assert r.status_code == 200, (headers, r.text)
        np.testing.assert_allclose(r.json()["predictions"], diabetes.predict(DIABETES), rtol=1e-9)
    r = requests.post(f"{pool.url}/invocations", json={"instances": WINE.tolist()},
                      headers={"Host": "wine.models.example.com", "X-Model-Name": "wine"}, timeout=5)
    assert r.json()["predictions"] == wine.predict(WINE).tolist()
    # a model's host is its boundary: another model's name there is a 404 that lists nothing
    r = requests.post(f"{pool.url}/invocations", json={"instances": WINE.tolist()},
                      headers={"Host": "diabetes.models.example.com", "X-Model-Name": "wine"}, timeout=5)
    assert r.status_code == 404 and "'diabetes'" not in r.json()["message"]

    # nothing names a model: 400 saying how to choose; an unknown one: 404 in each protocol's shape
    r = requests.post(f"{pool.url}/invocations", json={"instances": WINE.tolist()},
                      headers={"Host": "infer-pool.models.example.com"}, timeout=5)
    assert r.status_code == 400 and r.json()["error_code"] == "BAD_REQUEST"
    assert "X-Model-Name" in r.json()["message"] and "'wine'" in r.json()["message"]
    r = requests.post(f"{pool.url}/invocations", json={"instances": WINE.tolist()}, headers={"X-Model-Name": "vino"}, timeout=5)
    assert r.status_code == 404 and r.json()["error_code"] == "ENDPOINT_NOT_FOUND" and "'vino'" in r.json()["message"]
    r = requests.post(f"{pool.url}/v2/models/vino/infer", json={"inputs": []}, timeout=5)
    assert r.status_code == 404 and "'vino'" in r.json()["error"] and "'wine'" in r.json()["error"]
    assert requests.post(f"{pool.url}/v1/models/vino:predict", json={"instances": [[1]]}, timeout=5).status_code == 404
    assert requests.get(f"{pool.url}/v2/models/wine/versions/7/ready", timeout=5).status_code == 404
    assert not client.is_model_ready("vino")
    with pytest.raises(InferenceServerException, match="vino"):
        client.get_model_metadata("vino")

    # per model: requests, loads (one each), load time, models loaded, memory used
    m = pool.metrics()
    assert m[("infer_pool_model_loads_total", (("model", "wine"), ("outcome", "loaded")))] == 1
    assert m[("infer_pool_model_loads_total", (("model", "diabetes"), ("outcome", "loaded")))] == 1
    assert m[("infer_pool_model_load_duration_seconds_count", (("model", "wine"),))] == 1
    assert 0 < m[("infer_pool_model_load_duration_seconds_sum", (("model", "diabetes"),))] < 5
    assert m[("infer_pool_models_loaded", ())] == 2
    repository = read_repository(tmp_path / "repo", ("onnx",), None)
    expected = {name: footprint_bytes(repository.models[(name, "1")], (tmp_path / "repo" / f"{name}.onnx").stat().st_size)
                for name in ("wine", "diabetes")}
    for name, size in expected.items():
        assert m[("infer_pool_model_memory_bytes", (("model", name),))] == size
    assert m[("infer_pool_memory_used_bytes", ())] == sum(expected.values())
    assert m[("infer_requests_total", (("code", "200"), ("model", "diabetes"), ("protocol", "mlflow")))] == 3
    # wine over V2: one infer and one model-ready that answered 200 (the not-ready ones were 503s)
    assert m[("infer_requests_total", (("code", "200"), ("model", "wine"), ("protocol", "v2")))] == 2
    assert m[("infer_requests_total", (("code", "503"), ("model", "wine"), ("protocol", "v2")))] == 1
    # the first request of each model waited for its load; the second diabetes one did not
    assert m[("infer_pool_model_load_wait_seconds_count", (("model", "wine"),))] == 1
    assert m[("infer_pool_model_load_wait_seconds_count", (("model", "diabetes"),))] == 1


def test_repository_index_load_and_unload_through_tritonclient(models_dir, tmp_path, start_pool):
    pool = start_pool(make_repository(models_dir, tmp_path / "repo"))
    client = pool.control
    rows = client.get_model_repository_index()
    assert [(r["name"], r["version"], r["state"]) for r in rows] == [("diabetes", "1", "UNAVAILABLE"), ("wine", "1", "UNAVAILABLE")]
    assert all("not loaded" in r["reason"] for r in rows)

    client.load_model("wine")  # a pre-load: the scale function's move
    assert pool.client.is_model_ready("wine")
    assert index(pool)["wine"] == {"name": "wine", "version": "1", "state": "READY", "reason": ""}
    r = requests.post(f"{pool.control_url}/v2/repository/index", json={"ready": True}, timeout=5)
    assert [row["name"] for row in r.json()] == ["wine"]
    client.load_model("wine")  # loading a loaded model keeps it, loads nothing again
    assert pool.metric("infer_pool_model_loads_total", model="wine", outcome="loaded") == 1
    assert pool.metric("infer_pool_model_load_wait_seconds_count", model="wine") == 0  # a pre-load is no client's wait

    client.unload_model("wine")
    assert not pool.client.is_model_ready("wine")
    assert index(pool)["wine"]["state"] == "UNAVAILABLE" and "unloaded" in index(pool)["wine"]["reason"]
    assert pool.metric("infer_pool_model_evictions_total", model="wine", reason="unload") == 1
    assert pool.metric("infer_pool_models_loaded") == 0 and pool.metric("infer_pool_memory_used_bytes") == 0
    # an unloaded model loads again on its next request
    np.testing.assert_array_equal(infer_v2(pool.client, "wine", WINE), joblib.load(models_dir / "wine.joblib").predict(WINE))
    assert pool.metric("infer_pool_model_loads_total", model="wine", outcome="loaded") == 2

    def traffic() -> float:
        return sum(v for k, v in pool.metrics().items() if k[0] == "infer_requests_total")

    before = traffic()
    with pytest.raises(InferenceServerException, match="vino"):
        client.load_model("vino")
    r = requests.post(f"{pool.control_url}/v2/repository/models/vino/unload", timeout=5)
    assert r.status_code == 404 and "'vino'" in r.json()["error"]
    r = requests.post(f"{pool.control_url}/v2/repository/models/wine/load", json={"parameters": {"config": "{}"}}, timeout=5)
    assert r.status_code == 400 and "config" in r.json()["error"]
    r = requests.post(f"{pool.control_url}/v2/repository/index", data=b"{", timeout=5)
    assert r.status_code == 400 and "malformed JSON" in r.json()["error"]
    client.load_model("diabetes")
    client.unload_model("diabetes")
    client.get_model_repository_index()
    # control requests are not traffic: the forecast reads infer_requests_total as the Service's load
    assert traffic() == before


def test_lru_eviction_keeps_the_budget(models_dir, tmp_path, start_pool):
    repo = make_repository(models_dir, tmp_path / "repo", copies={"wine-b": "wine", "wine-c": "wine"})
    manifest = json.loads((repo / "manifest.json").read_text())
    for entry in manifest["artifacts"]:
        if entry["name"] == "wine-c":
            entry["path"] = "wine.onnx"  # several names may list one file
    (repo / "manifest.json").write_text(json.dumps(manifest))
    (repo / "wine-c.onnx").unlink()
    sizes = {k[0]: footprint_bytes(e, (repo / e.path).stat().st_size)
             for k, e in read_repository(repo, ("onnx",), None).models.items()}
    # room for the two largest models, never three
    budget_mb = (sorted(sizes.values())[-1] + sorted(sizes.values())[-2]) / 2**20 + 0.001
    assert sum(sorted(sizes.values())[:3]) > budget_mb * 2**20
    pool = start_pool(repo, {"POOL_MEMORY_MB": f"{budget_mb:.6f}"})
    client = pool.client
    expected = joblib.load(models_dir / "wine.joblib").predict(WINE)
    for name in ("wine", "wine-b", "wine", "wine-c"):  # wine-b is then the least recently used
        np.testing.assert_array_equal(infer_v2(client, name, WINE), expected)
        assert pool.metric("infer_pool_memory_used_bytes") <= budget_mb * 2**20
    states = {name: row["state"] for name, row in index(pool).items()}
    assert states == {"wine": "READY", "wine-b": "UNAVAILABLE", "wine-c": "READY", "diabetes": "UNAVAILABLE"}
    assert "evicted" in index(pool)["wine-b"]["reason"]
    assert pool.metric("infer_pool_model_evictions_total", model="wine-b", reason="lru") == 1
    assert pool.metric("infer_pool_model_evictions_total", model="wine", reason="lru") == 0
    assert pool.metric("infer_pool_models_loaded") == 2
    assert pool.metric("infer_pool_memory_used_bytes") == sizes["wine"] + sizes["wine-c"]
    # the evicted model serves again: it loads again and evicts the least recently used (wine)
    np.testing.assert_array_equal(infer_v2(client, "wine-b", WINE), expected)
    assert pool.metric("infer_pool_model_loads_total", model="wine-b", outcome="loaded") == 2
    assert pool.metric("infer_pool_model_evictions_total", model="wine", reason="lru") == 1
    assert not client.is_model_ready("wine") and client.is_model_ready("wine-c")


def test_a_model_over_the_whole_budget_is_refused_and_the_others_serve(models_dir, tmp_path, start_pool):
    pool = start_pool(make_repository(models_dir, tmp_path / "repo"), {"POOL_MEMORY_MB": "0.1"})
    r = requests.post(f"{pool.url}/v2/models/wine/infer", json={"inputs": [
        {"name": "x", "shape": [1, 13], "datatype": "FP64", "data": WINE[0].tolist()}]}, timeout=5)
    assert r.status_code == 503 and "POOL_MEMORY_MB" in r.json()["error"]
    assert pool.metric("infer_pool_model_loads_total", model="wine", outcome="refused") == 1


class SleepOnLoad:
    """Pickled as a call to time.sleep: unpickling the model it is stored in takes that long
    (a slow load, to make concurrent first requests overlap for sure)."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def __reduce__(self):
        return (time.sleep, (self.seconds,))


def slow_repository(models_dir: Path, out: Path, seconds: float) -> tuple[Path, str]:
    """A repository with a joblib model `slow` (the wine estimator, unpickling in `seconds`),
    and the manifest's sha256 to pin, without which the pool serves no pickle."""
    model = joblib.load(models_dir / "wine.joblib")
    model.slow_load_ = SleepOnLoad(seconds)
    out.mkdir(parents=True)
    joblib.dump(model, out / "slow.joblib")
    digest = hashlib.sha256((out / "slow.joblib").read_bytes()).hexdigest()
    manifest = {"artifacts": [{"path": "slow.joblib", "format": "joblib", "name": "slow", "version": "1",
                               "sha256": digest, "example": WINE[:1].tolist()}]}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out, hashlib.sha256((out / "manifest.json").read_bytes()).hexdigest()


def concurrent_infers(url: str, model: str, n: int) -> list[requests.Response]:
    body = {"inputs": [{"name": "x", "shape": list(WINE.shape), "datatype": "FP64", "data": WINE.ravel().tolist()}]}
    barrier = threading.Barrier(n)
    replies: list[requests.Response] = [None] * n  # type: ignore[list-item]

    def one(i: int) -> None:
        barrier.wait()
        replies[i] = requests.post(f"{url}/v2/models/{model}/infer", json=body, timeout=30)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return replies


def test_concurrent_first_requests_load_the_model_once(models_dir, tmp_path, start_pool):
    repo, pin = slow_repository(models_dir, tmp_path / "repo", 1.0)
    pool = start_pool(repo, {"MODEL_REPOSITORY_SHA256": pin, "GUNICORN_THREADS": "16"})
    replies = concurrent_infers(pool.url, "slow", 12)
    expected = joblib.load(models_dir / "wine.joblib").predict(WINE).tolist()
    assert [r.status_code for r in replies] == [200] * 12
    assert all(r.json()["outputs"][0]["data"] == expected for r in replies)
    assert pool.metric("infer_pool_model_loads_total", model="slow", outcome="loaded") == 1
    # all twelve waited for that one load (about the 1 s unpickling)
    assert pool.metric("infer_pool_model_load_wait_seconds_count", model="slow") == 12
    assert pool.metric("infer_pool_model_load_wait_seconds_sum", model="slow") > 12 * 0.5


def test_a_load_longer_than_the_wait_bound_gets_a_retryable_503(models_dir, tmp_path, start_pool):
    repo, pin = slow_repository(models_dir, tmp_path / "repo", 2.0)
    pool = start_pool(repo, {"MODEL_REPOSITORY_SHA256": pin, "GUNICORN_THREADS": "8", "POOL_LOAD_WAIT_SECONDS": "0.3"})
    replies = concurrent_infers(pool.url, "slow", 4)
    codes = sorted(r.status_code for r in replies)
    # every wait is bounded, the request that started the load too (the load runs on its own thread)
    assert codes == [503, 503, 503, 503]
    for r in replies:
        assert r.headers["Retry-After"] == "1" and "still loading" in r.json()["error"]
    wait_until(lambda: pool.client.is_model_ready("slow"), 10, "the slow load")
    assert pool.metric("infer_pool_model_loads_total", model="slow", outcome="loaded") == 1


def test_pickles_serve_from_the_pool_only_with_the_manifest_pinned(models_dir, tmp_path, start_pool):
    repo, pin = slow_repository(models_dir, tmp_path / "repo", 0.0)
    pool = start_pool(repo)
    r = requests.post(f"{pool.control_url}/v2/repository/models/slow/load", timeout=5)
    assert r.status_code == 400 and "MODEL_REPOSITORY_SHA256" in r.json()["error"]
    assert index(pool)["slow"]["state"] == "UNAVAILABLE" and "pickle" in index(pool)["slow"]["reason"]
    stop(pool.process)
    wrong = start_pool(repo, {"MODEL_REPOSITORY_SHA256": "0" * 64}, wait_ready=False)
    r = requests.get(f"{wrong.url}/v2/health/ready", timeout=5)
    assert r.status_code == 503 and r.json()["ready"] is False and "MODEL_REPOSITORY_SHA256" in r.json()["error"]


def test_sha256_gate_per_model_refuses_a_tampered_file_and_the_others_serve(models_dir, tmp_path, start_pool):
    repo = make_repository(models_dir, tmp_path / "repo", copies={"tampered": "wine"})
    data = bytearray((repo / "tampered.onnx").read_bytes())
    data[-1] ^= 0xFF
    (repo / "tampered.onnx").write_bytes(bytes(data))
    pool = start_pool(repo)
    client = pool.client
    with pytest.raises(InferenceServerException) as refused:
        infer_v2(client, "tampered", WINE)
    assert "sha256" in str(refused.value) and "tampered.onnx" in str(refused.value)
    r = requests.post(f"{pool.url}/v2/models/tampered/infer", json={"inputs": [
        {"name": "x", "shape": [1, 13], "datatype": "FP64", "data": WINE[0].tolist()}]}, timeout=5)
    assert r.status_code == 503 and "sha256" in r.json()["error"]
    assert not client.is_model_ready("tampered")
    row = index(pool)["tampered"]
    assert row["state"] == "UNAVAILABLE" and "sha256" in row["reason"]
    assert "repository manifest" in row["reason"] and "MODEL_SHA256" not in row["reason"]  # where the pin came from
    with pytest.raises(InferenceServerException, match="sha256"):
        pool.control.load_model("tampered")  # a failed load: 400, saying why
    # the refusal is remembered (one load per refusal, not per request); the load call retried it once
    assert pool.metric("infer_pool_model_loads_total", model="tampered", outcome="refused") == 2
    np.testing.assert_array_equal(infer_v2(client, "wine", WINE), joblib.load(models_dir / "wine.joblib").predict(WINE))
    assert client.is_server_ready()


@pytest.mark.parametrize("bad, said", [
    ({"path": "../wine.onnx"}, "without '..'"),
    ({"path": "/etc/passwd"}, "without '..'"),
    ({"sha256": None}, "sha256"),
    ({"name": "a/b"}, "DNS label"),
    ({"name": "Wine"}, "DNS label"),
    ({"name": "vin\u00f6"}, "DNS label"),
    ({"name": "10"}, "DNS label"),
])
def test_a_manifest_that_does_not_verify_keeps_the_pool_not_ready(models_dir, tmp_path, start_pool, bad, said):
    repo = make_repository(models_dir, tmp_path / "repo")
    shutil.copy(models_dir / "wine.onnx", tmp_path / "wine.onnx")  # a real file outside the repository
    manifest = json.loads((repo / "manifest.json").read_text())
    manifest["artifacts"][0].update(bad)
    (repo / "manifest.json").write_text(json.dumps(manifest))
    pool = start_pool(repo, wait_ready=False)
    r = requests.get(f"{pool.url}/v2/health/ready", timeout=5)
    assert r.status_code == 503 and said in r.json()["error"] and "artifacts[0]" in r.json()["error"]
    r = requests.post(f"{pool.url}/v2/models/diabetes/infer", json={"inputs": []}, timeout=5)
    assert r.status_code == 503 and r.headers["Retry-After"] == "1"


def test_cold_start_metrics_start_to_ready_and_requests_that_arrived_before_ready(models_dir, tmp_path, start_pool):
    pool = start_pool(make_repository(models_dir, tmp_path / "repo"))
    answered = time.time()
    start_to_ready = pool.metric("infer_start_to_ready_seconds")
    assert 0 < start_to_ready < answered - pool.spawned + 0.05
    body = {"inputs": [{"name": "x", "shape": [1, 13], "datatype": "FP64", "data": WINE[0].tolist()}]}
    # held by a proxy since the pod was spawned (X-Request-Start, in us): a cold-start request
    r = requests.post(f"{pool.url}/v2/models/wine/infer", json=body, timeout=5,
                      headers={"X-Request-Start": f"t={int(pool.spawned * 1e6)}"})
    assert r.status_code == 200
    # sent after ready, or not stamped: not one
    requests.post(f"{pool.url}/v2/models/wine/infer", json=body, timeout=5, headers={"X-Request-Start": f"t={time.time():.3f}"})
    requests.post(f"{pool.url}/v2/models/wine/infer", json=body, timeout=5)
    assert pool.metric("infer_cold_start_wait_seconds_count") == 1
    waited = pool.metric("infer_cold_start_wait_seconds_sum")
    ready_at = pool.spawned + start_to_ready  # the process started a little after spawn: waited >= that
    assert start_to_ready - 0.05 <= waited <= ready_at - pool.spawned + 0.5
    assert pool.metric("infer_requests_total", model="wine", protocol="v2", code="200") == 3


def test_one_model_server_reports_its_cold_start_too(models_dir, infer_server_factory):
    spawned = time.time()
    server = infer_server_factory(models_dir / "wine.onnx", workers=2)
    text = requests.get(f"{server.url}/metrics", timeout=5).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    (sample,) = families["infer_start_to_ready_seconds"].samples
    assert 0 < sample.value < time.time() - spawned
    body = {"inputs": [{"name": "x", "shape": [1, 13], "datatype": "FP64", "data": WINE[0].tolist()}]}
    requests.post(f"{server.url}/v2/models/wine/infer", json=body, headers={"X-Request-Start": f"t={spawned * 1e3:.0f}"}, timeout=5)
    text = requests.get(f"{server.url}/metrics", timeout=5).text
    counts = [s.value for f in text_string_to_metric_families(text) if f.name == "infer_cold_start_wait_seconds"
              for s in f.samples if s.name.endswith("_count")]
    assert counts == [1]


def test_function_shim_serves_the_pool(models_dir, tmp_path):
    repo = make_repository(models_dir, tmp_path / "repo")
    control = free_port()
    fn = start_function("infer", {"MODEL_REPOSITORY": str(repo), "POOL_CONTROL_PORT": str(control)}, tmp_path / "infer.log")
    try:
        client = httpclient.InferenceServerClient(fn.url.removeprefix("http://"))
        assert not client.is_model_ready("wine")
        np.testing.assert_array_equal(infer_v2(client, "wine", WINE), joblib.load(models_dir / "wine.joblib").predict(WINE))
        r = requests.post(f"{fn.url}/invocations", json={"dataframe_records": DIABETES.to_dict(orient="records")},
                          headers={"Host": "diabetes.models.example.com"}, timeout=5)
        np.testing.assert_allclose(r.json()["predictions"], joblib.load(models_dir / "diabetes.joblib").predict(DIABETES), rtol=1e-9)
        assert requests.post(f"{fn.url}/v2/repository/models/wine/unload", timeout=5).status_code == 404
        httpclient.InferenceServerClient(f"127.0.0.1:{control}").unload_model("wine")
        assert not client.is_model_ready("wine")
        # the function logs the one JSON format of every function
        lines = [json.loads(line) for line in fn.log_lines() if line.startswith("{")]
        assert any(line["msg"] == "model repository verified" and isinstance(line["ts"], float) for line in lines)
    finally:
        fn.stop()


def test_routing_reads_the_model_from_the_header_then_the_host_the_client_called():
    from infer.routing import host_label, listing, model_name

    served = {"wine": 1, "Diabetes": 1}
    labels = {"wine": "wine", "diabetes": "Diabetes"}
    assert host_label("wine.models.example.com:8080") == "wine"
    assert host_label("WINE.models.example.com, proxy.internal") == "wine"
    assert host_label("[::1]:8080") is None and host_label("") is None
    assert model_name({"host": "diabetes.models.example.com"}, served, labels) == "Diabetes"
    assert model_name({"host": "pool.models.example.com", "x-forwarded-host": "wine.models.example.com"}, served, labels) == "wine"
    assert model_name({"host": "wine.models.example.com", "x-model-name": "Diabetes"}, served, labels) == "Diabetes"
    assert model_name({"host": "wine.models.example.com", "x-model-name": "vino"}, served, labels) is None
    assert model_name({"host": "127.0.0.1:8080"}, served, labels) is None
    assert listing([f"m{i}" for i in range(25)]).endswith("'m19' and 5 more")


def test_one_model_server_has_no_repository_extension(client):
    r = client.post("/v2/repository/index")
    assert r.status_code == 404 and "MODEL_REPOSITORY" in r.get_json()["error"]
    r = client.post("/v2/repository/models/wine/load")
    assert r.status_code == 404
    assert "model_repository" not in client.get("/v2").get_json()["extensions"]
    # /invocations still needs no model name: it serves its one model
    assert client.post("/invocations", json={"instances": [WINE[0].tolist()]}).status_code == 200


@pytest.mark.parametrize("env, said", [
    ({"MODEL_PATH": "wine.onnx", "MODEL_REPOSITORY": "models"}, "not both"),
    ({"MODEL_REPOSITORY": "models", "POOL_MEMORY_MB": "lots"}, "POOL_MEMORY_MB must be a number"),
    ({"MODEL_REPOSITORY": "models", "POOL_MEMORY_MB": "-1"}, "POOL_MEMORY_MB must be positive"),
    ({"MODEL_REPOSITORY": "models", "POOL_LOAD_WAIT_SECONDS": "nan"}, "POOL_LOAD_WAIT_SECONDS must be positive"),
    ({"MODEL_REPOSITORY": "models", "POOL_FORMATS": "onnx,tensorflow"}, "tensorflow"),
    ({"MODEL_REPOSITORY": "models", "MODEL_REPOSITORY_SHA256": "abc"}, "64 hex digits"),
])
def test_pool_settings_refuse_what_cannot_be_used(env, said):
    from infer.settings import InferSettings, SettingsError

    with pytest.raises(SettingsError, match=said):
        InferSettings.from_env(env)


def test_pool_settings_defaults():
    from infer.settings import InferSettings

    s = InferSettings.from_env({"MODEL_REPOSITORY": "models"})
    assert s.model_repository == s.model_root == Path("models").resolve()
    assert (s.pool_memory_mb, s.pool_load_wait_s, s.pool_formats) == (256.0, 10.0, ("onnx", "skops", "joblib", "mlflow"))
    assert s.repository_sha256 is None
