"""Fit the request-rate forecaster on the project's synthetic fleet and publish it.

Writes `<out>/forecaster-<version>.joblib` and `<out>/manifest.json`; the manifest names the
current artifact, its sha256 (the forecast function refuses any file whose digest differs),
the training window, the features and the estimator's parameters. Publishing a new version only
rewrites the manifest last, so a running forecast function never sees a manifest that points at
a half-written file; it picks the new version up on its next tick, without a restart.

    python -m training.publish_forecaster --out models/forecaster
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import joblib

from forecast.forecaster import RateForecaster
from training.synthetic_traces import make_fleet

MANIFEST = "manifest.json"
# The synthetic fleet is laid on the calendar from this Monday, so that time-of-day and
# day-of-week features mean what they mean on real traffic.
TRAIN_START_MINUTE = int(datetime(2026, 1, 5, tzinfo=timezone.utc).timestamp()) // 60


def publish(out: Path, n_series: int = 120, days: int = 15, seed: int = 0, **params) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    fleet = make_fleet(n_series, days, seed)
    started = time.perf_counter()
    model = RateForecaster(**params).fit(fleet, start_minute=TRAIN_START_MINUTE)
    fit_seconds = time.perf_counter() - started
    tmp = out / ".forecaster.joblib.tmp"
    joblib.dump(model, tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    version = digest[:12]
    artifact = out / f"forecaster-{version}.joblib"
    os.replace(tmp, artifact)
    manifest = {
        "current": {
            "path": artifact.name,
            "format": "joblib",
            "sha256": digest,
            "version": version,
            "published_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "training": {
                "data": f"synthetic fleet: {n_series} series x {days} days, seed {seed} (training/synthetic_traces.py)",
                "window_start": _iso(TRAIN_START_MINUTE),
                "window_end": _iso(TRAIN_START_MINUTE + days * 1440),
                "rows": int(model.n_train_rows_),
                "fit_seconds": round(fit_seconds, 2),
            },
            "features": model.feature_names_,
            "params": model.get_params(),
        }
    }
    tmp_manifest = out / f".{MANIFEST}.tmp"
    tmp_manifest.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp_manifest, out / MANIFEST)
    return manifest


def _iso(minute: int) -> str:
    return datetime.fromtimestamp(minute * 60, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("models/forecaster"))
    parser.add_argument("--series", type=int, default=120)
    parser.add_argument("--days", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    current = publish(args.out, args.series, args.days, args.seed)["current"]
    print(f"published forecaster {current['version']} ({current['training']['rows']} rows, "
          f"fit {current['training']['fit_seconds']} s) to {args.out / current['path']}")


if __name__ == "__main__":
    main()
