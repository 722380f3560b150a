"""Baselines, the oracle's bound and the backtest CLI on a trace file it has never seen."""

from __future__ import annotations

import json

import numpy as np

from training import backtest
from training.controllers import AlwaysOn, HybridHistogram, KeepAlive, OracleMinute, PolicyController, oracle_table
from training.simulator import KpaOnly, SimConfig, simulate, spread_minutes
from scale.min_scale_policy import PolicySettings


def sparse_counts(minutes: int = 600, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    counts = np.zeros(minutes)
    for start in rng.choice(np.arange(10, minutes - 10), size=15, replace=False):
        counts[start:start + 3] = rng.integers(1, 20, size=3)
    return counts


def test_oracle_has_no_cold_starts_and_costs_less_than_always_on():
    counts = sparse_counts()
    arrivals = spread_minutes(counts, 0)
    config = SimConfig(cold_start_s=5.0)
    oracle = OracleMinute(arrivals, config.capacity_rps, config.actuation_delay_s, config.cold_start_s, False)
    fed = PolicyController(oracle_table(counts, 0, len(counts), 5), PolicySettings(idle_window_s=None))
    results = {name: simulate(arrivals, c, config, counts) for name, c in
               (("oracle", oracle), ("fed", fed), ("kpa", KpaOnly()), ("always", AlwaysOn()), ("keepalive", KeepAlive(10)))}
    assert results["kpa"].cold_start_requests > 0
    assert results["oracle"].cold_start_requests == 0 == results["always"].cold_start_requests
    assert results["oracle"].pod_seconds < results["always"].pod_seconds
    # the bound: our policy fed perfect minute counts pays at least what the oracle pays
    assert results["fed"].pod_seconds >= results["oracle"].pod_seconds
    assert results["keepalive"].cold_start_requests < results["kpa"].cold_start_requests


def test_hybrid_histogram_windows_follow_the_idle_time_percentiles():
    policy = HybridHistogram()
    assert policy.windows() == (0, 240)  # not representative yet: standard keep-alive
    policy.histogram[30] = 50  # idle times all 30 min: pre-warm before 30, keep briefly
    prewarm, keepalive = policy.windows()
    assert prewarm == 27 and prewarm + keepalive >= 34


def test_cli_json_on_any_trace_file(tmp_path, capsys):
    counts = sparse_counts(minutes=400)
    path = tmp_path / "mine.csv"
    start = 1_700_000_000 - 1_700_000_000 % 60
    lines = ["timestamp,requests"] + [f"{start + 60 * i},{int(c)}" for i, c in enumerate(counts) if i not in range(200, 210)]
    path.write_text("\n".join(lines) + "\n")
    backtest.main(["--trace", str(path), "--format", "json", "--cold-start-s", "3", "--capacity-rps", "5"])
    scores = json.loads(capsys.readouterr().out)
    policies = {s["policy"] for s in scores}
    assert {"kpa", "predictive", "keepalive", "hybrid_histogram", "always_on", "oracle_minute"} <= policies
    for s in scores:
        assert {"policy", "settings", "default", "requests", "cold_start_requests", "over_capacity_requests", "pod_seconds"} <= set(s)
    defaults = [s for s in scores if s["policy"] == "predictive" and s["default"]]
    assert len(defaults) == 1
    scored_requests = {s["requests"] for s in scores}
    assert len(scored_requests) == 1  # every policy scored on the same arrivals


def test_cli_table_prints_skill_against_the_baselines_and_the_reliability(tmp_path, capsys):
    counts = sparse_counts(minutes=400)
    path = tmp_path / "mine.csv"
    start = 1_700_000_000 - 1_700_000_000 % 60
    path.write_text("\n".join(["timestamp,requests"] + [f"{start + 60 * i},{int(c)}" for i, c in enumerate(counts)]) + "\n")
    backtest.main(["--trace", str(path), "--plots", str(tmp_path / "plots")])
    out = capsys.readouterr().out
    assert "MASE vs seasonal naive" in out and "Brier skill" in out and "vs own base rate" in out
    assert "reliability of P(any) (predicted -> observed, minutes)" in out
    assert "statsforecast AutoETS" in out and "| ets_baseline |" in out
    assert "fallback (default predictive row): the keep-alive decided" in out and "fallback=off" in out
    assert (tmp_path / "plots" / "mine_reliability.png").stat().st_size > 0
