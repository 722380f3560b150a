"""Publishing as ONNX: a conversion is published only after onnxruntime agrees with the
estimator on held-back rows; a refused one says why and writes nothing; the manifest entry
holds what the server needs to describe the model without scikit-learn."""

from __future__ import annotations

import json

import joblib
import numpy as np
import onnx
import pytest
from sklearn.datasets import load_wine
from sklearn.linear_model import Ridge
from sklearn.tree import DecisionTreeClassifier

from infer.artifacts import load_artifact
from fncommon.verified_file import sha256_of
from infer.settings import InferSettings
from training import publish_model
from training.publish_model import ATOL, RTOL, ConversionRefused, publish_onnx
from tests.infer.conftest import HomeMade


def entries(models_dir) -> dict[tuple[str, str], dict]:
    manifest = json.loads((models_dir / "manifest.json").read_text())
    return {(e["name"], e["format"]): e for e in manifest["artifacts"]}


@pytest.mark.parametrize("name", ["wine", "diabetes"])
def test_make_models_publishes_verified_onnx_with_server_metadata(models_dir, name):
    entry = entries(models_dir)[(name, "onnx")]
    estimator = joblib.load(models_dir / f"{name}.joblib")
    assert entry["path"] == f"{name}.onnx" and entry["version"] == "1"
    assert entry["sha256"] == sha256_of(models_dir / entry["path"])
    server = entry["server"]
    assert server["n_features"] == estimator.n_features_in_
    assert server["input"] == onnx.load(models_dir / entry["path"]).graph.input[0].name
    assert server["allow_nan"] is False and server["predict_ndim"] == 1
    assert entry["example"] and len(entry["example"][0]) == estimator.n_features_in_
    report = entry["verification"]
    assert report["rows_origin"] == "held-back rows" and report["rows"] >= 40
    assert report["rtol"] == RTOL and report["input_type"] == "float64"
    graph_outputs = [o.name for o in onnx.load(models_dir / entry["path"]).graph.output]
    assert set(server["outputs"].values()) <= set(graph_outputs)
    assert "ZipMap" not in {n.op_type for n in onnx.load(models_dir / entry["path"]).graph.node}
    if name == "wine":
        assert server["classes"] == estimator.classes_.tolist()
        assert list(server["outputs"]) == ["predict", "predict_proba"]
        assert report["label_mismatches"] == 0 and report["predict_proba_max_rel_error"] <= RTOL
    else:
        assert server["feature_names"] == list(estimator.feature_names_in_) and server["classes"] is None
        assert list(server["outputs"]) == ["predict"] and report["predict_max_rel_error"] <= RTOL
    assert json.loads((models_dir / "manifest.json").read_text())["refused"] == []


def test_unconvertible_model_is_refused_with_its_reason_and_nothing_written(tmp_path):
    X, y = load_wine(return_X_y=True)
    with pytest.raises(ConversionRefused, match="skl2onnx cannot convert HomeMade"):
        publish_onnx(HomeMade().fit(X, y), tmp_path, "home", None, X[:20], X[:1].tolist())
    assert not list(tmp_path.iterdir())


def test_conversion_that_disagrees_on_held_back_rows_is_refused(tmp_path):
    """A float32 graph of a regressor whose output is a small difference of large terms: it
    loses the digits that matter, verification sees it and nothing is published."""
    rng = np.random.default_rng(0)
    X = rng.normal(0, 1e4, (400, 3))
    y = X[:, 0] - X[:, 1] + rng.normal(0, 1, 400)
    model = Ridge(alpha=1e-6).fit(X[:300], y[:300])
    with pytest.raises(ConversionRefused, match=r"predict differs from the estimator's by up to .* beyond rtol 1e-06"):
        publish_onnx(model, tmp_path, "ridge", None, X[300:], X[:1].tolist(), input_types=("float32",))
    assert not (tmp_path / "ridge.onnx").exists()
    # the same model in float64 agrees, and is published
    assert publish_onnx(model, tmp_path, "ridge", None, X[300:], X[:1].tolist()).path.exists()


def test_model_that_accepts_nan_is_verified_on_nan_rows_and_refused_when_they_differ(tmp_path):
    """sklearn's trees accept NaN (missing values go down a branch chosen in training); the
    converted graph (float32: onnxruntime's tree operators take no double) routes NaN its own
    way, which only rows with NaN show, so the tree is not published as ONNX."""
    X, y = load_wine(return_X_y=True)
    tree = DecisionTreeClassifier(random_state=0).fit(X[::2], y[::2])
    with pytest.raises(ConversionRefused) as refused:
        publish_onnx(tree, tmp_path, "tree", None, X[1::2], X[:1].tolist())
    reason = str(refused.value)
    assert "onnxruntime cannot load the float64 conversion" in reason
    assert "float32 conversion gives different labels on" in reason
    assert not (tmp_path / "tree.onnx").exists()


def test_publish_model_command_for_a_users_model_then_serves_it(tmp_path, models_dir, capsys):
    users = tmp_path / "mine"
    users.mkdir()
    X, _ = load_wine(return_X_y=True)
    np.savetxt(tmp_path / "rows.csv", X[::5], delimiter=",", header=",".join(f"f{i}" for i in range(13)), comments="")
    code = publish_model.main([str(models_dir / "wine.joblib"), "--out", str(users), "--name", "vino",
                               "--version", "3", "--rows", str(tmp_path / "rows.csv")])
    assert code == 0, capsys.readouterr().err
    (entry,) = json.loads((users / "manifest.json").read_text())["artifacts"]
    assert entry["name"] == "vino" and entry["format"] == "onnx" and entry["verification"]["rows"] == len(X[::5])
    artifact = load_artifact(InferSettings.from_env({"MODEL_ROOT": str(users), "MODEL_PATH": "vino.onnx"}))
    assert artifact.name == "vino" and artifact.version == "3" and artifact.format == "onnx"
    got = artifact.runtime.predict(X, ("predict", "predict_proba"))
    estimator = joblib.load(models_dir / "wine.joblib")
    np.testing.assert_array_equal(got["predict"], estimator.predict(X))
    np.testing.assert_allclose(got["predict_proba"], estimator.predict_proba(X), rtol=RTOL, atol=ATOL)


def test_publish_model_command_refuses_and_says_why(tmp_path, capsys):
    X, y = load_wine(return_X_y=True)
    joblib.dump(HomeMade().fit(X, y), tmp_path / "home.joblib")
    assert publish_model.main([str(tmp_path / "home.joblib"), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "not published as ONNX: skl2onnx cannot convert HomeMade" in err
    assert not (tmp_path / "out").exists()


def test_onnx_without_manifest_describes_itself_from_its_own_metadata(tmp_path, models_dir):
    (tmp_path / "wine.onnx").write_bytes((models_dir / "wine.onnx").read_bytes())
    artifact = load_artifact(InferSettings.from_env({"MODEL_ROOT": str(tmp_path), "MODEL_PATH": "wine.onnx"}))
    assert artifact.runtime.info.classes == [0, 1, 2] and artifact.runtime.info.n_features == 13
    assert artifact.version is None and artifact.name == "wine"
