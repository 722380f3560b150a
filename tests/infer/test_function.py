"""The infer function as Knative runs it: func-python's server (hypercorn) around the shim,
started the way `func run --builder=host` starts it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import requests
import tritonclient.http as httpclient
from sklearn.datasets import load_wine

from tests.support.functions import start_function
from training.publish_model import pinned_env
from tests.support.servers import stop, wait_until


def run_function(env: dict[str, str], tmp_path) -> tuple[str, object]:
    if env.get("MODEL_ROOT") and env.get("MODEL_PATH"):
        env = {**pinned_env(Path(env["MODEL_ROOT"]) / env["MODEL_PATH"]), **env}  # the publish step's pin
    fn = start_function("infer", env, tmp_path / "infer.log", wait_ready=False)
    return fn.url, fn.process


def test_function_serves_v2_under_func_python(models_dir, tmp_path):
    url, proc = run_function({"MODEL_ROOT": str(models_dir), "MODEL_PATH": "wine.joblib"}, tmp_path)
    try:
        wait_until(lambda: requests.get(f"{url}/health/readiness", timeout=1).status_code == 200, 60, "readiness", proc)
        client = httpclient.InferenceServerClient(url.removeprefix("http://"))
        assert client.is_model_ready("wine")
        X = load_wine().data[:5]
        tensor = httpclient.InferInput("input-0", list(X.shape), "FP64")
        tensor.set_data_from_numpy(X, binary_data=False)
        result = client.infer("wine", [tensor], outputs=[httpclient.InferRequestedOutput("predict", binary_data=False)])
        import joblib

        np.testing.assert_array_equal(result.as_numpy("predict"), joblib.load(models_dir / "wine.joblib").predict(X))
        r = requests.post(f"{url}/invocations", data=b"{", headers={"Content-Type": "application/json"}, timeout=5)
        assert r.status_code == 400 and "malformed JSON" in r.json()["error"]
    finally:
        stop(proc)


def test_function_with_refused_model_is_not_ready_and_answers_503(models_dir, tmp_path):
    url, proc = run_function({"MODEL_ROOT": str(models_dir), "MODEL_PATH": "wine.joblib", "MODEL_SHA256": "a" * 64}, tmp_path)
    try:
        r = requests.get(f"{url}/health/readiness", timeout=5)
        assert r.status_code >= 500 and "sha256" in r.text
        r = requests.post(f"{url}/v2/models/wine/infer", json={"inputs": []}, timeout=5)
        assert r.status_code == 503 and "sha256" in r.json()["error"]
    finally:
        stop(proc)


def test_function_without_configuration_is_not_ready(models_dir, tmp_path):
    url, proc = run_function({"MODEL_PATH": ""}, tmp_path)
    try:
        r = requests.get(f"{url}/health/readiness", timeout=5)
        assert r.status_code >= 500 and "MODEL_PATH" in r.text
        r = requests.get(f"{url}/v2/health/ready", timeout=5)
        assert r.status_code == 503 and "MODEL_PATH" in r.json()["error"]
    finally:
        stop(proc)
