"""Model loading is gated: pickle-based files only from inside the root and with a matching
sha256; skops files only with trusted types. A refusal leaves the server up and not ready."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio

from infer.artifacts import load_artifact
from fncommon.verified_file import sha256_of
from training.publish_model import pinned_env
from infer.errors import ModelRefused
from infer.model import ServedModel
from infer.settings import InferSettings, SettingsError
from tests.infer.conftest import HomeMade


def settings(root: Path, path: str, **env: str) -> InferSettings:
    return InferSettings.from_env({"MODEL_ROOT": str(root), "MODEL_PATH": path, **env})


@pytest.fixture()
def root(tmp_path, models_dir) -> Path:
    copy = tmp_path / "models"
    shutil.copytree(models_dir, copy)
    return copy


def test_each_format_loads_with_its_manifest_entry(root):
    for path, fmt in (("wine.joblib", "joblib"), ("wine.skops", "skops"), ("wine-mlflow", "mlflow")):
        artifact = load_artifact(settings(root, path, **pinned_env(root / path)))
        assert artifact.format == fmt and artifact.name == "wine" and artifact.version == "1"
        assert artifact.estimator.predict(np.zeros((1, 13))).shape == (1,)


def test_a_pickle_needs_its_digest_pinned_in_the_environment_not_only_beside_it(root):
    """Replacing the file and the manifest beside it together must not load anything."""
    import joblib

    from sklearn.dummy import DummyClassifier

    evil = DummyClassifier().fit(np.zeros((2, 13)), [0, 1])
    joblib.dump(evil, root / "wine.joblib")
    manifest = json.loads((root / "manifest.json").read_text())
    for entry in manifest["artifacts"]:
        if entry["path"] == "wine.joblib":
            entry["sha256"] = sha256_of(root / "wine.joblib")
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelRefused, match="no sha256 is pinned"):
        load_artifact(settings(root, "wine.joblib"))
    with pytest.raises(ModelRefused, match="sha256 of 'wine.joblib' is"):
        load_artifact(settings(root, "wine.joblib", MODEL_SHA256="0" * 64))
    # data-only formats keep loading with the manifest's digest (checked, not required)
    assert load_artifact(settings(root, "wine.skops")).format == "skops"


def test_joblib_without_any_sha256_is_refused(root):
    (root / "manifest.json").unlink()
    with pytest.raises(ModelRefused, match="no sha256 is pinned"):
        load_artifact(settings(root, "wine.joblib"))


def test_joblib_with_configured_sha256_loads_without_manifest(root):
    (root / "manifest.json").unlink()
    sha = sha256_of(root / "wine.joblib")
    assert load_artifact(settings(root, "wine.joblib", MODEL_SHA256=sha, MODEL_NAME="vino")).name == "vino"


def test_tampered_joblib_is_refused(root):
    pin = pinned_env(root / "wine.joblib")
    with (root / "wine.joblib").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(ModelRefused, match="sha256 of 'wine.joblib' is"):
        load_artifact(settings(root, "wine.joblib", **pin))


def test_tampered_mlflow_model_file_is_refused(root):
    pin = pinned_env(root / "wine-mlflow")
    with (root / "wine-mlflow" / "model.pkl").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(ModelRefused, match="sha256 of 'model.pkl'"):
        load_artifact(settings(root, "wine-mlflow", **pin))


def test_paths_outside_the_root_are_refused(root, tmp_path):
    outside = tmp_path / "elsewhere.joblib"
    shutil.copy(root / "wine.joblib", outside)
    with pytest.raises(ModelRefused, match="outside the model root"):
        load_artifact(settings(root, "../elsewhere.joblib", MODEL_SHA256=sha256_of(outside)))
    (root / "link.joblib").symlink_to(outside)
    with pytest.raises(ModelRefused, match="outside the model root"):
        load_artifact(settings(root, "link.joblib", MODEL_SHA256=sha256_of(outside)))


def test_skops_with_untrusted_types_is_refused_until_trusted(root):
    X, y = np.zeros((4, 2)), np.array([0, 1, 0, 1])
    sio.dump(HomeMade().fit(X, y), root / "home.skops")
    with pytest.raises(ModelRefused, match="not trusted: .*HomeMade"):
        load_artifact(settings(root, "home.skops"))
    trusted = f"{HomeMade.__module__}.HomeMade"
    assert load_artifact(settings(root, "home.skops", SKOPS_TRUSTED=trusted)).estimator.n_features_in_ == 2


def test_corrupt_file_with_matching_sha_is_refused_not_crashed(root):
    (root / "junk.joblib").write_bytes(b"not a pickle at all")
    sha = sha256_of(root / "junk.joblib")
    with pytest.raises(ModelRefused, match="cannot load 'junk.joblib'"):
        load_artifact(settings(root, "junk.joblib", MODEL_SHA256=sha))


def test_refused_model_keeps_reason_and_is_not_ready(root):
    model = ServedModel(settings(root, "wine.joblib", MODEL_SHA256="f" * 64))
    assert model.load() is False
    assert not model.ready and "sha256" in model.reason


def test_unfitted_estimator_is_refused(root):
    import joblib
    from sklearn.linear_model import LogisticRegression

    joblib.dump(LogisticRegression(), root / "unfitted.joblib")
    model = ServedModel(settings(root, "unfitted.joblib", MODEL_SHA256=sha256_of(root / "unfitted.joblib")))
    assert model.load() is False and "not fitted" in model.reason


def test_warm_up_uses_the_manifest_example(root):
    manifest = json.loads((root / "manifest.json").read_text())
    for entry in manifest["artifacts"]:
        entry["example"] = [[1.0, 2.0]]  # wrong width: the warm-up must fail and say so
    (root / "manifest.json").write_text(json.dumps(manifest))
    model = ServedModel(settings(root, "wine.joblib", **pinned_env(root / "wine.joblib")))
    assert model.load() is False and "warm-up" in model.reason


@pytest.mark.parametrize("env,words", [
    ({}, "MODEL_PATH"),
    ({"MODEL_PATH": "x", "MODEL_FORMAT": "tensorflow"}, "MODEL_FORMAT"),
    ({"MODEL_PATH": "x", "MODEL_SHA256": "abc"}, "64 hex"),
    ({"MODEL_PATH": "x", "MAX_BODY_BYTES": "-1"}, "positive"),
])
def test_bad_settings_say_what_is_wrong(env, words):
    with pytest.raises(SettingsError, match=words):
        InferSettings.from_env(env)
