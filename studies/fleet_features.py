"""Fleet features and what they are worth: measured walk-forward on a fleet trace.

- Each series' own periods at minute resolution (30 min, 60 min, the day) are forecaster
  features now: `forecast.features.period_shares`, wired into `build` and `build_at_end`.
- `fleet_activity`, the share of the fleet's services with a request in the last 1 / 5 / 15
  minutes, is not: it needs the fleet as context wherever a row is built (the live tick has it,
  but the backtests forecast one series at a time), and what it adds is measured here first.
  Pure numpy; row t uses minutes < t only (a test changes the future and checks that no earlier
  row moves).

`python -m studies.fleet_features FLEET...` prints, per fleet, the walk-forward Brier score of
P(a request in the next minute) per service: from the RateForecaster itself (refitted every day
on every service's past, as the product fits it), against the base rate of the past; and from
one classifier over the forecaster's features with and without `fleet_activity` (what the fleet's
activity would add). Run it with another checkout's functions/forecast first on PYTHONPATH to
score that checkout's features on the same days.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from forecast import features
from forecast.forecaster import RateForecaster

ACTIVITY_WINDOWS = (1, 5, 15)
DAY = features.DAY


def fleet_activity(counts: np.ndarray, origins: np.ndarray) -> np.ndarray:
    """(len(origins), len(ACTIVITY_WINDOWS)): share of services with a request in [t - w, t).
    A fleet's services are driven by the same users and clocks: on the shared Alibaba fleet a
    model's next request is likelier when others have just been busy."""
    active = np.nan_to_num(counts) > 0
    prefix = np.concatenate((np.zeros((active.shape[0], 1), np.int64), np.cumsum(active, axis=1)), axis=1)
    t = np.asarray(origins, dtype=np.int64)
    out = np.empty((len(t), len(ACTIVITY_WINDOWS)))
    for k, w in enumerate(ACTIVITY_WINDOWS):
        lo = np.clip(t - w, 0, None)
        hi = np.clip(t, 0, active.shape[1])
        out[:, k] = ((prefix[:, hi] - prefix[:, lo]) > 0).mean(axis=0)
    return out


def scored_days(n_minutes: int, warmup_days: int, every: int) -> list[int]:
    """First minute of each scored day: after the warm-up, every `every`-th day."""
    return list(range(warmup_days * DAY, n_minutes, every * DAY))


def forecaster_brier(counts: np.ndarray, start_minute: int, warmup_days: int = 2, every: int = 1,
                     horizon: int = 2, seed: int = 0) -> dict:
    """Walk-forward Brier score of the RateForecaster's next-minute P(any request), pooled over
    services and scored days; the model of a day is fitted on every service's minutes before it
    (horizon 2 as in the fleet backtest: the two minutes a decision covers).
    References on the same rows: the fleet's base rate before the day (one constant), and each
    service's own base rate before the day."""
    scores: dict[str, list[np.ndarray]] = {"forecaster": [], "fleet_base_rate": [], "service_base_rate": []}
    hits = []
    for start in scored_days(counts.shape[1], warmup_days, every):
        origins = np.arange(start, min(counts.shape[1], start + DAY))
        past = np.nan_to_num(counts[:, :start]) > 0
        model = RateForecaster(horizon=horizon, random_state=seed).fit(list(counts[:, :start]), start_minute=start_minute)
        for i in range(len(counts)):
            scores["forecaster"].append(model.predict_origins(counts[i], origins, start_minute).p_any[:, 0])
            scores["fleet_base_rate"].append(np.full(len(origins), past.mean()))
            scores["service_base_rate"].append(np.full(len(origins), past[i].mean()))
            hits.append(np.nan_to_num(counts[i, origins]) > 0)
    y = np.concatenate(hits)
    out = {name: float(np.mean((np.concatenate(p) - y) ** 2)) for name, p in scores.items()}
    return out | {"rows_scored": int(len(y)), "active_share": float(y.mean())}


def activity_brier_gain(counts: np.ndarray, start_minute: int, warmup_days: int = 2, every: int = 1,
                        sample: int = 40_000, seed: int = 0) -> dict:
    """Walk-forward Brier score of P(a request in the next minute) per service from one
    classifier over forecast/features.py's features, alone and with `fleet_activity` added;
    one classifier per scored day, fitted on rows sampled from the minutes before it."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(seed)
    n_series, _ = counts.shape
    scores: dict[str, list[np.ndarray]] = {"features": [], "with_activity": []}
    hits = []

    def rows(origins_of: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        base, extra, y = [], [], []
        for i, origins in enumerate(origins_of):
            base.append(features.build(features.SeriesIndex(counts[i]), origins, 1, start_minute))
            extra.append(fleet_activity(counts, origins))
            y.append(np.nan_to_num(counts[i, origins]) > 0)
        return np.vstack(base), np.vstack(extra), np.concatenate(y)

    for start in scored_days(counts.shape[1], warmup_days, every):
        per = max(1, sample // n_series)
        train = [np.sort(rng.choice(np.arange(60, start), size=min(per, start - 60), replace=False))
                 for _ in range(n_series)]
        Xb, Xa, y = rows(train)
        if y.all() or not y.any():
            continue
        Tb, Ta, ty = rows([np.arange(start, min(counts.shape[1], start + DAY))] * n_series)
        for name, X, T in (("features", Xb, Tb), ("with_activity", np.hstack([Xb, Xa]), np.hstack([Tb, Ta]))):
            unseen = np.isnan(X).all(axis=0)  # last week's minute, in the first week: held at 0
            X, T = X.copy(), T.copy()
            X[:, unseen], T[:, unseen] = 0.0, 0.0
            model = HistGradientBoostingClassifier(max_iter=80, random_state=seed, early_stopping=False).fit(X, y)
            scores[name].append(model.predict_proba(T)[:, 1])
        hits.append(ty)
    y = np.concatenate(hits)
    return {name: float(np.mean((np.concatenate(p) - y) ** 2)) for name, p in scores.items()}


def main(argv: list[str] | None = None) -> None:
    from training.fleet_trace import load_fleet

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("fleets", nargs="+", type=Path)
    parser.add_argument("--every", type=int, default=1, help="score every N-th day after the warm-up (time)")
    parser.add_argument("--no-activity", action="store_true", help="skip the fleet-activity classifier")
    args = parser.parse_args(argv)
    for path in args.fleets:
        fleet = load_fleet(path)
        counts = fleet.minute_counts()
        fc = forecaster_brier(counts, fleet.start_minute, every=args.every)
        print(f"{fleet.name}: Brier P(any, next minute), walk-forward, {len(features.FEATURE_NAMES)} features: "
              f"forecaster {fc['forecaster']:.5f}, fleet base rate {fc['fleet_base_rate']:.5f} "
              f"({fc['forecaster'] / fc['fleet_base_rate']:.3f}x), service base rate {fc['service_base_rate']:.5f} "
              f"({fc['forecaster'] / fc['service_base_rate']:.3f}x); "
              f"{fc['rows_scored']} service-minutes, {fc['active_share']:.3f} active", flush=True)
        if not args.no_activity:
            gain = activity_brier_gain(counts, fleet.start_minute, every=args.every)
            print(f"{fleet.name}: one classifier over the forecaster's features {gain['features']:.5f}, "
                  f"with fleet activity {gain['with_activity']:.5f} "
                  f"({gain['with_activity'] / gain['features']:.3f}x)", flush=True)


if __name__ == "__main__":
    main()
