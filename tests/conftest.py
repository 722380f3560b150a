"""Shared fixtures: real Redis and Prometheus servers, trained example models, a running infer
server. Servers are real processes on free loopback ports, stopped at the end of the session."""

from __future__ import annotations

import os

# HistGradientBoosting's OpenMP threads thrash on a small shared machine: a 12 h backtest took
# 276 s with the default threads and 12 s with one (training/backtest.py, measured). Set before
# anything imports scikit-learn; `make backtest-fleet` and `make whatif` do the same.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from tests.support.servers import (  # noqa: E402, F401  (fixtures)
    free_port,
    infer_server_factory,
    models_dir,
    prometheus_server,
    redis_db,
    redis_server,
)
