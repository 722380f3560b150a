"""The model store refuses a forecaster fitted on other features than features.py builds."""

from __future__ import annotations

import hashlib
import json

import joblib
from forecast.model_store import ModelStore

from training.publish_forecaster import publish


def test_a_forecaster_of_other_features_is_refused_and_the_verified_one_keeps_serving(tmp_path):
    root = tmp_path / "forecaster"
    good = publish(root, n_series=4, days=3, max_train_rows=2000, max_iter=5)["current"]
    store = ModelStore(str(root))
    assert store.refresh().sha256 == good["sha256"] and store.problem is None
    stale = joblib.load(root / good["path"])
    stale.feature_names_ = stale.feature_names_[:-1]  # as an older release's forecaster
    joblib.dump(stale, root / "stale.joblib")
    digest = hashlib.sha256((root / "stale.joblib").read_bytes()).hexdigest()
    (root / "manifest.json").write_text(json.dumps({"current": {"path": "stale.joblib", "sha256": digest}}))
    assert store.refresh().sha256 == good["sha256"]
    assert "other features" in store.problem
