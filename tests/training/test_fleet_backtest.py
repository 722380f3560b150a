"""The fleet backtest end to end on synthetic fleets built here: every policy and field, the
pooled design against per-model Knative, and the fleet budget's convergence."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from training import backtest
from training.fleet_backtest import FleetOptions, run_fleet
from training.fleet_trace import FleetTrace

ROOT = Path(__file__).resolve().parents[2]

START = 1_700_000_000 - 1_700_000_000 % 86_400


@pytest.fixture(autouse=True)
def one_thread():
    """The forecaster's fits on one core, as `make backtest-fleet` runs them (OMP_NUM_THREADS=1):
    on a shared 2-core machine more threads only wait for each other."""
    with threadpool_limits(limits=1):
        yield


def synthetic_fleet(days: int = 2, models: int = 6, seed: int = 7, busy: int = 0) -> FleetTrace:
    """Sparse models with a daily cycle (busy hours differ per model), and optionally `busy` busy ones."""
    rng = np.random.default_rng(seed)
    seconds = days * 86_400
    t = np.arange(seconds)
    bins, who, counts = [], [], []
    for m in range(models):
        level = 0.3 if m >= models - busy else 0.0004 * (1 + m)
        phase = rng.uniform(0, 2 * np.pi)
        rate = level * (1 + np.sin(2 * np.pi * t / 86_400 + phase)) ** 2
        arrivals = rng.poisson(rate)
        active = np.flatnonzero(arrivals)
        bins += active.tolist()
        who += [m] * len(active)
        counts += arrivals[active].tolist()
    order = np.lexsort((np.array(who), np.array(bins)))
    return FleetTrace("synthetic_fleet_1s.csv", 1, START, START + seconds, tuple(f"m{i}" for i in range(models)),
                      np.array(bins)[order], np.array(who)[order], np.array(counts)[order])


def test_the_default_is_the_deployed_plan_and_the_budget_steers_its_spend(capsys):
    """The default row is the pool plan, minute by minute (its candidates' shares are reported),
    and the fleet budget (the same plan with FLEET_BUDGET) spends more than the default when the
    default spends under it: the plan picks warmth from the history by the budget's target."""
    fleet = synthetic_fleet(days=3)
    budget = 3.0  # times per-model Knative's pod-seconds: above what the default spends pooled
    scores, info = run_fleet(fleet, FleetOptions(warmup_days=1, fleet_budget=budget), progress=False)
    default = next(s for s in scores if s["policy"] == "predictive" and s["default"])
    tuned = next(s for s in scores if "fleet_budget" in s["settings"])
    assert info["default_choices"] and abs(sum(info["default_choices"].values()) - 1.0) < 0.01
    assert default["pod_seconds_vs_kpa"] < budget and tuned["pod_seconds_vs_kpa"] > default["pod_seconds_vs_kpa"], \
        (default, tuned)
    assert tuned["cold_start_requests"] <= default["cold_start_requests"]
    assert info["budget_choices"] and info["budget_choices"] != info["default_choices"]
    # the table says which candidates the default chooses among, how often each was in force, and
    # the forecast's share against the pooled keep-alive curve on the days it was picked
    share = info["forecast_share"]
    assert share["days"] == 2 and 0 <= share["forecast_days"] <= 2
    if share["forecast_days"]:
        assert share["pod_seconds"] > 0
    from training.fleet_backtest import print_fleet_table
    print_fleet_table(scores, info)
    out = capsys.readouterr().out
    assert "warmth candidates" in out
    assert "the forecast's share (default)" in out and "the forecast's share (fleet budget)" in out
    assert "Knative retention" in out and str(next(iter(info["default_choices"]))) in out


def test_cli_json_has_every_policy_and_field(tmp_path, capsys):
    fleet = synthetic_fleet(days=2, models=4, busy=2)
    path = tmp_path / "mine_fleet_1s.csv"
    rows = ["timestamp,service,requests"] + [f"{fleet.start + b},{fleet.services[w]},{c}"
                                              for b, w, c in zip(fleet.bins, fleet.service_index, fleet.counts)]
    path.write_text("\n".join(rows) + "\n")
    (tmp_path / "mine_fleet_1s.csv.json").write_text(json.dumps(
        {"bin_seconds": 1, "start": fleet.start, "end": fleet.end, "services": list(fleet.services) + ["idle"]}))
    backtest.main(["--fleet", str(path), "--format", "json", "--capacity-rps", "0.5", "--max-scale", "50", "--warmup-days", "1",
                   "--models-per-pod", "1", "--model-load-ms", "5000", "--info", str(tmp_path / "info.json")])
    scores = json.loads(capsys.readouterr().out)
    # what the run found besides its scores, written for docs/results to render (the skill a page
    # quotes is then the run's own)
    infos = json.loads((tmp_path / "info.json").read_text())
    assert len(infos) == 1  # one object per fleet run
    info = infos[0]
    assert info["fleet"] == scores[0]["fleet"] and info["services"] >= 4
    assert {"mase", "brier_skill", "median_series_brier_skill", "reliability"} <= set(info["forecast_skill"])
    spec = importlib.util.spec_from_file_location("gen_results_tables", ROOT / "scripts" / "gen_results_tables.py")
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)
    rendered = tables.fleet_findings(infos)
    assert f"{info['placement_moves']} moves" in rendered
    assert f"Brier skill {info['forecast_skill']['brier_skill']:+.3f} pooled" in rendered
    policies = {s["policy"] for s in scores}
    assert {"kpa", "keepalive", "hybrid_histogram", "predictive_per_model", "oracle_per_model", "predictive",
            "pool_kpa", "pool_keepalive", "pool_predictive", "oracle_pooled"} <= policies
    fields = {"policy", "settings", "default", "requests", "cold_start_requests", "model_loads", "pod_seconds",
              "wasted_pod_seconds", "p75_service_cold_pct", "over_capacity_requests"}
    for s in scores:
        assert fields <= set(s)
        assert s["requests"] == scores[0]["requests"]  # every policy scored on the same arrivals
        assert 0 <= s["wasted_pod_seconds"] <= s["pod_seconds"]
    assert len([s for s in scores if s["policy"] == "predictive" and s["default"]]) == 1
    assert scores[0]["policy"] == "kpa" and scores[0]["cold_start_vs_kpa"] == 1.0
    oracle = next(s for s in scores if s["policy"] == "oracle_pooled")
    assert oracle["cold_start_requests"] == 0
    pooled = next(s for s in scores if s["policy"] == "pool_kpa")
    assert pooled["model_loads"] > 0  # the pool's pods load the models they serve
    per_model = next(s for s in scores if s["policy"] == "kpa")
    assert per_model["model_loads"] == 0
    default = next(s for s in scores if s["policy"] == "predictive" and s["default"])
    # at 0.5 req/s per pod the busy models each keep a pod busy and reach every pool pod, and a pool pod
    # holding one model, five seconds a load (a large model), would spend most of its time loading: the
    # busier gets its own Service (placement by memory)
    assert default["services_dedicated"] >= 1


def test_prices_in_lockstep_decide_as_each_price_alone():
    """PolicySchedule shares one plan call among prices that agree on a minute: the schedules
    must be those each price gives when run by itself."""
    from scale.min_scale_policy import PolicySettings

    from training.fleet_backtest import PolicySchedule

    rng = np.random.default_rng(5)
    n = 1500
    settings = [PolicySettings(capacity_rps=10.0, cold_start_cost_pod_s=c, max_scale=50) for c in (300.0, 60.0, 1200.0)]
    for level in (0.05, 3.0, 400.0):
        point = rng.gamma(0.5, level, (n, 2)).astype(np.float32)
        upper = (point * rng.uniform(0.8, 3.0, (n, 2))).astype(np.float32)
        p_any = rng.beta(0.5, 0.5, (n, 2)).astype(np.float32)
        point[:30] = np.nan
        active = rng.random(n) < 0.9
        together = [np.zeros(n, np.int64) for _ in settings]
        PolicySchedule(point, upper, p_any).fill(together, 0, n, settings, active)
        for s, row in zip(settings, together):
            alone = np.zeros(n, np.int64)
            PolicySchedule(point, upper, p_any).fill([alone], 0, n, [s], active)
            assert np.array_equal(alone, row)
        assert len({row.tobytes() for row in together}) > 1 or level > 100  # the prices do differ where P(any) matters
    with pytest.raises(ValueError):
        PolicySchedule(point, upper, p_any).fill([np.zeros(n, np.int64)] * 2, 0, n,
                                                 [settings[0], PolicySettings(capacity_rps=5.0)], active)
