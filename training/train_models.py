"""Train the example inference models and publish them with a sha256 manifest.

    python -m training.train_models --out models

The wine classifier is the seed article's (scikit-learn's bundled wine data: no download); the
diabetes regressor is fitted on a DataFrame so that it carries feature names and exercises
column matching. Each is fitted on three quarters of its data; the other quarter is held back
to verify the ONNX conversion (`training.publish_model`). Each model is written as ONNX (the
server's default, when verification passes), joblib, skops and an MLflow sklearn directory; the
manifest lists every artifact's path, format, model name, version, sha256 and an example row
(the server's warm-up input), and models whose ONNX conversion was refused, with the reason.
"""

from __future__ import annotations

import argparse
import json
import pickle
import platform
import shutil
from datetime import datetime, timezone
from pathlib import Path

import joblib
import numpy as np
import sklearn
import skops.io as sio
import yaml
from sklearn.datasets import load_diabetes, load_wine
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from infer.artifacts import MANIFEST
from fncommon.verified_file import sha256_of
from training.publish_model import ConversionRefused, publish_onnx

VERSION = "1"


def train_wine():
    """(model, example row, held-back rows)"""
    X, y = load_wine(return_X_y=True)
    X_fit, X_held, y_fit, _ = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X_fit, y_fit)
    return model, X[:1].tolist(), X_held


def train_diabetes():
    frame = load_diabetes(as_frame=True)
    X_fit, X_held, y_fit, _ = train_test_split(frame.data, frame.target, test_size=0.25, random_state=0)
    model = make_pipeline(StandardScaler(), Ridge(alpha=1.0)).fit(X_fit, y_fit)
    return model, frame.data.iloc[:1].to_numpy().tolist(), X_held.to_numpy()


def write_mlflow_dir(model, directory: Path) -> Path:
    """An MLflow sklearn model directory as `mlflow.sklearn.save_model` lays it out."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    with (directory / "model.pkl").open("wb") as f:
        pickle.dump(model, f, protocol=pickle.DEFAULT_PROTOCOL)
    mlmodel = {
        "artifact_path": "model",
        "flavors": {
            "python_function": {
                "loader_module": "mlflow.sklearn",
                "model_path": "model.pkl",
                "predict_fn": "predict",
                "python_version": platform.python_version(),
                "env": {"virtualenv": "python_env.yaml"},
            },
            "sklearn": {
                "pickled_model": "model.pkl",
                "serialization_format": "pickle",
                "sklearn_version": sklearn.__version__,
                "code": None,
            },
        },
        "utc_time_created": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f"),
    }
    (directory / "MLmodel").write_text(yaml.safe_dump(mlmodel, sort_keys=False))
    (directory / "requirements.txt").write_text(f"scikit-learn=={sklearn.__version__}\n")
    return directory / "model.pkl"


def publish(out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    entries, refused = [], []
    for name, (model, example, held_back) in {"wine": train_wine(), "diabetes": train_diabetes()}.items():
        try:
            entries.append(publish_onnx(model, out, name, VERSION, held_back, example).entry)
        except ConversionRefused as exc:  # the joblib/skops files below still serve it
            refused.append({"name": name, "format": "onnx", "reason": str(exc)})
        joblib_path = out / f"{name}.joblib"
        joblib.dump(model, joblib_path)
        skops_path = out / f"{name}.skops"
        sio.dump(model, skops_path)
        mlflow_dir = out / f"{name}-mlflow"
        mlflow_file = write_mlflow_dir(model, mlflow_dir)
        for path, fmt, hashed in (
            (joblib_path, "joblib", joblib_path),
            (skops_path, "skops", skops_path),
            (mlflow_dir, "mlflow", mlflow_file),
        ):
            entries.append(
                {
                    "path": path.name,
                    "format": fmt,
                    "name": name,
                    "version": VERSION,
                    "sha256": sha256_of(hashed),
                    "sklearn_version": sklearn.__version__,
                    "example": np.asarray(example).tolist(),
                }
            )
    manifest = {"artifacts": entries, "refused": refused}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="models", type=Path)
    args = parser.parse_args()
    manifest = publish(args.out)
    for entry in manifest["artifacts"]:
        print(f"{entry['format']:7s} {args.out / entry['path']}  sha256={entry['sha256'][:16]}...")


if __name__ == "__main__":
    main()
