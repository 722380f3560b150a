from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin

from werkzeug.test import Client
from werkzeug.wrappers import Response

from infer.app import build
from infer.settings import InferSettings


def client_for(app) -> Client:
    """werkzeug's test client over the server's WSGI app (the same app gunicorn serves)."""
    return Client(app, Response)


def make_app(models_dir: Path, artifact: str = "wine.joblib", **env: str):
    from training.publish_model import pinned_env

    settings = InferSettings.from_env({"MODEL_ROOT": str(models_dir), "MODEL_PATH": artifact,
                                       **pinned_env(models_dir / artifact), **env})
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
    return client_for(wine_app)


@pytest.fixture(scope="session")
def onnx_client(models_dir):
    app, model = make_app(models_dir, "wine.onnx", MAX_BODY_BYTES="65536")
    assert model.ready, model.reason
    return client_for(app)


class HomeMade(ClassifierMixin, BaseEstimator):
    """An estimator of the user's own: skops does not trust its type, skl2onnx has no converter."""

    def fit(self, X, y):
        self.n_features_in_ = np.asarray(X).shape[1]
        self.classes_ = np.unique(y)
        return self

    def predict(self, X):
        return np.full(len(X), self.classes_[0])
