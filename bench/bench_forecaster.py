"""Forecaster speed at fleet scale: 1,000 services with one week of minute history each.

    make bench-forecaster      # or: .venv/bin/python bench/bench_forecaster.py [--services 1000]

The services are week-long windows cut at random offsets from the shared traces (Alibaba,
NASA), each thinned or scaled by a random factor so that quiet and busy services mix. Prints
the daily refit time and the per-tick forecast time (all services, one batch), against the
product's budgets: refit < 120 s, tick < 10 s.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from forecast.forecaster import RateForecaster

from training.traces import load_trace
from tqdm import tqdm

SHARED = Path(__file__).resolve().parents[2] / "shared" / "traces"
WEEK = 7 * 1440


def fleet(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    sources = [load_trace(SHARED / name).minutes for name in ("alibaba_sd_lora_2024_train.csv", "nasa_http_1995.csv")]
    rows = []
    for i in range(n):
        source = sources[i % len(sources)]
        start = rng.integers(0, len(source) - WEEK)
        window = source[start:start + WEEK]
        factor = rng.choice([0.05, 0.2, 1.0, 3.0])
        rows.append(np.where(np.isnan(window), np.nan, rng.poisson(np.nan_to_num(window) * factor)))
    return np.stack(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=1000)
    args = parser.parse_args()
    X = fleet(args.services)
    model = RateForecaster()
    print(f"refitting on {args.services} services (about a minute or two) ...", file=sys.stderr, flush=True)
    began = time.perf_counter()
    model.fit(X, start_minute=0)
    fit_s = time.perf_counter() - began
    ticks = []
    for _ in tqdm(range(3), desc="forecast ticks", unit="tick", file=sys.stderr):
        began = time.perf_counter()
        out = model.predict(X, start_minute=0)
        ticks.append(time.perf_counter() - began)
    assert out.point.shape == (args.services, model.horizon)
    print(f"| measure ({args.services} services x {WEEK} min) | seconds | budget | within |")
    print("|---|---|---|---|")
    print(f"| daily refit ({model.n_train_rows_} sampled rows) | {fit_s:.1f} | 120 | {'yes' if fit_s < 120 else 'NO'} |")
    print(f"| forecast tick, median of 3 | {np.median(ticks):.2f} | 10 | {'yes' if np.median(ticks) < 10 else 'NO'} |")


if __name__ == "__main__":
    main()
