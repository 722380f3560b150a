"""Fleet features for the forecaster: what the other services are doing, and each series' own
periods at minute resolution. Pure numpy; row t uses minutes < t only (a test changes the
future and checks that no earlier row moves).

- `fleet_activity`: the share of the fleet's services with a request in the last 1 / 5 / 15
  minutes. A fleet's services are driven by the same users and clocks: on the shared Alibaba
  fleet a model's next request is likelier when others have just been busy.
- `period_features`: for each candidate period p (minutes: 30, 60, and the day), the share of
  the series' last `cycles` cycles that had a request within +-1 minute of the same phase, and
  the strength of the best period. Timers are the second trigger of Azure Functions after HTTP
  (16%, "Serverless in the Wild"): jobs every 30 or 60 minutes or at a fixed time of day, which the
  day and week lags of forecast/features.py do not see at a 30 or 60 minute period.

Not yet wired into forecast/features.py (another change owns that package now):
`python -m training.fleet_features FLEET` measures what they add to P(any request in the next
minute), walk-forward, so that the wiring can be judged on numbers.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

PERIODS = (30, 60, 1440)
ACTIVITY_WINDOWS = (1, 5, 15)
FLEET_FEATURE_NAMES = ([f"fleet_active_{w}" for w in ACTIVITY_WINDOWS]
                       + [f"period_{p}_share" for p in PERIODS] + ["best_period_share"])


def fleet_activity(counts: np.ndarray, origins: np.ndarray) -> np.ndarray:
    """(len(origins), len(ACTIVITY_WINDOWS)): share of services with a request in [t - w, t)."""
    active = np.nan_to_num(counts) > 0
    prefix = np.concatenate((np.zeros((active.shape[0], 1), np.int64), np.cumsum(active, axis=1)), axis=1)
    t = np.asarray(origins, dtype=np.int64)
    out = np.empty((len(t), len(ACTIVITY_WINDOWS)))
    for k, w in enumerate(ACTIVITY_WINDOWS):
        lo = np.clip(t - w, 0, None)
        hi = np.clip(t, 0, active.shape[1])
        out[:, k] = ((prefix[:, hi] - prefix[:, lo]) > 0).mean(axis=0)
    return out


def period_features(series: np.ndarray, origins: np.ndarray, cycles: int = 4) -> np.ndarray:
    """(len(origins), len(PERIODS) + 1): for each period p, the share of the last `cycles`
    cycles with a request within +-1 minute of the target minute's phase (target = t); the
    last column is the largest share. Cycles whose window is not yet in the past count as unknown."""
    active = (np.nan_to_num(series) > 0).astype(np.int64)
    prefix = np.concatenate(([0], np.cumsum(active)))
    t = np.asarray(origins, dtype=np.int64)
    out = np.zeros((len(t), len(PERIODS) + 1))
    for k, p in enumerate(PERIODS):
        hits = np.zeros(len(t))
        seen = np.zeros(len(t))
        for c in range(1, cycles + 1):
            centre = t - c * p
            lo, hi = centre - 1, centre + 2  # [centre - 1, centre + 1]
            ok = (lo >= 0) & (hi <= t)  # the whole window lies before the origin
            lo_c, hi_c = np.clip(lo, 0, len(active)), np.clip(hi, 0, len(active))
            hit = (prefix[hi_c] - prefix[lo_c]) > 0
            hits += np.where(ok, hit, 0)
            seen += ok
        out[:, k] = np.where(seen > 0, hits / np.maximum(seen, 1), 0.0)
    out[:, -1] = out[:, :-1].max(axis=1)
    return out


def brier_gain(counts: np.ndarray, start_minute: int, warmup_days: int = 2, sample: int = 40_000, seed: int = 0) -> dict:
    """Walk-forward Brier score of P(a request in the next minute) per service, from
    forecast/features.py's features alone and with the fleet features added: one classifier per
    scored day, fitted on rows sampled from the minutes before it."""
    from forecast import features
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(seed)
    n_series, n = counts.shape
    day = 1440
    scores = {"base": [], "fleet": []}
    targets_all = []

    def rows(origins_of: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        base, extra, y = [], [], []
        for i, origins in enumerate(origins_of):
            if not len(origins):
                continue
            index = features.SeriesIndex(counts[i])
            base.append(features.build(index, origins, 1, start_minute))
            extra.append(np.hstack([fleet_activity(counts, origins), period_features(counts[i], origins)]))
            y.append(counts[i, origins] > 0)
        return np.vstack(base), np.vstack(extra), np.concatenate(y)

    for start in range(warmup_days * day, n, day):
        end = min(n, start + day)
        per = max(1, sample // n_series)
        train = [np.sort(rng.choice(np.arange(60, start), size=min(per, start - 60), replace=False)) for _ in range(n_series)]
        Xb, Xf, y = rows(train)
        if y.all() or not y.any():
            continue
        test = [np.arange(start, end)] * n_series
        Tb, Tf, ty = rows(test)
        for name, X, T in (("base", Xb, Tb), ("fleet", np.hstack([Xb, Xf]), np.hstack([Tb, Tf]))):
            unseen = np.isnan(X).all(axis=0)  # last week's minute, in the first week: held at 0
            X, T = X.copy(), T.copy()
            X[:, unseen], T[:, unseen] = 0.0, 0.0
            model = HistGradientBoostingClassifier(max_iter=80, random_state=seed, early_stopping=False).fit(X, y)
            scores[name].append(model.predict_proba(T)[:, 1])
        scores.setdefault("constant", []).append(np.full(len(ty), y.mean()))  # the training base rate
        targets_all.append(ty)
    y = np.concatenate(targets_all)
    out = {name: float(np.mean((np.concatenate(p) - y) ** 2)) for name, p in scores.items()}
    out["rows_scored"] = int(len(y))
    out["base_rate"] = float(y.mean())
    return out


def main(argv: list[str] | None = None) -> None:
    from training.fleet_trace import load_fleet

    paths = [Path(p) for p in (argv if argv is not None else sys.argv[1:])]
    for path in paths:
        fleet = load_fleet(path)
        result = brier_gain(fleet.minute_counts(), fleet.start_minute)
        print(f"{fleet.name}: Brier P(any, next minute) walk-forward: forecaster features {result['base']:.5f}, "
              f"with fleet features {result['fleet']:.5f} ({result['fleet'] / result['base']:.3f}x), "
              f"the training base rate {result['constant']:.5f}; "
              f"{result['rows_scored']} service-minutes, {result['base_rate']:.3f} active")


if __name__ == "__main__":
    main()
