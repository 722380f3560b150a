from __future__ import annotations

from pathlib import Path

import pytest

from infer.app import build
from infer.settings import InferSettings


def make_app(models_dir: Path, artifact: str = "wine.joblib", **env: str):
    settings = InferSettings.from_env({"MODEL_ROOT": str(models_dir), "MODEL_PATH": artifact, **env})
    app, model = build(settings)
    model.load()
    return app, model


@pytest.fixture(scope="session")
def wine_app(models_dir):
    app, model = make_app(models_dir, MAX_BODY_BYTES="65536")
    assert model.ready, model.reason
    return app


@pytest.fixture()
def client(wine_app):
    return wine_app.test_client()


@pytest.fixture(scope="session")
def onnx_client(models_dir):
    app, model = make_app(models_dir, "wine.onnx", MAX_BODY_BYTES="65536")
    assert model.ready, model.reason
    return app.test_client()
