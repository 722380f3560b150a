"""Walk-forward backtest of every scaling policy on one trace in the common CSV form.

    python -m training.backtest --trace FILE.csv [--cold-start-s 5] [--capacity-rps 10]
                                [--format table|json] [--plots DIR] [--sweep]
    python -m training.backtest --fleet FILE.csv ...   (a fleet: training/fleet_backtest.py)
    python -m training.backtest --prometheus URL [--preset P] [--selector 'namespace="models"'] [--days 7]
                                (what-if on your own history: training/whatif.py)

The forecaster never sees the future: the scored span is cut into blocks (a day, or a quarter of
the span on short traces); the model used in a block was fitted only on minutes before it, with
the synthetic fleet the published forecaster is trained on (one global model across services). The
warm-up (the first two days, or a third of a short trace) is simulated but not scored.
Policies: kpa (Knative alone; and with a fixed 15 s stable window), predictive (KPA + our
min-scale policy; with and without the idle-window lever, and with the busy-window lever, which
sets the window minute by minute as the scale function would), keepalive (fixed keep-alive), hybrid_histogram (Shahrad et al. 2020),
always_on (min-scale 1), seasonal_naive (our policy fed by same-minute-yesterday / last
minutes), ets_baseline (our policy fed by statsforecast's AutoETS: training/ets_baseline.py),
oracle_minute (knows every arrival; the least a min-scale schedule set once a minute
pays for zero cold starts). Ratios are against KPA in the same run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from forecast.forecaster import RateForecaster
from scale.fallback import FallbackSettings
from scale.min_scale_policy import PolicySettings
from tqdm import tqdm

from training import skill
from training.controllers import (
    AlwaysOn,
    ForecastTable,
    HybridHistogram,
    KeepAlive,
    OracleMinute,
    PolicyController,
    seasonal_naive_table,
)
from training.ets_baseline import ets_table
from training.publish_forecaster import TRAIN_START_MINUTE
from training.simulator import Control, KpaOnly, SimConfig, SimResult, simulate, spread_minutes
from training.synthetic_traces import fleet_on_calendar
from training.traces import Trace, load_trace  # noqa: F401 - the backtest's input

DAY = 1440
DEFAULT_COST = 300.0
IDLE_WINDOW_S = 6.0  # the window lever's setting when it is scored (IDLE_WINDOW=6s)
BUSY_WINDOW_S = 15.0  # the busy-window lever's setting when it is scored (BUSY_WINDOW=15s)


class FixedWindow:
    """Knative alone with a fixed stable window on the Service (autoscaling.knative.dev/window)."""

    def __init__(self, window_s: float):
        self.window_s = window_s

    def control(self, minute: int, counts: np.ndarray) -> Control:
        return Control(0, self.window_s)


def walk_forward(trace: Trace, horizon: int, warmup: int, block: int, forecaster: RateForecaster,
                 companions: np.ndarray | None = None, bar: tqdm | None = None) -> tuple[ForecastTable, float]:
    """Refit before every block on the minutes before it; `companions` (other services' series,
    on the trace's calendar) join the fit as they would in the global model of a fleet."""
    n = len(trace.minutes)
    others = [] if companions is None else list(companions)
    point = np.zeros((n - warmup, horizon))
    upper = np.zeros_like(point)
    p_any = np.zeros_like(point)
    fit_seconds = 0.0
    for start in range(warmup, n, block):
        end = min(n, start + block)
        began = time.perf_counter()
        model = forecaster.fit(others + [trace.minutes[:start]], start_minute=trace.start_minute)
        fit_seconds = max(fit_seconds, time.perf_counter() - began)
        result = model.predict_origins(trace.minutes, np.arange(start, end), trace.start_minute)
        point[start - warmup:end - warmup] = result.point
        upper[start - warmup:end - warmup] = result.upper
        p_any[start - warmup:end - warmup] = result.p_any
        if bar is not None:
            bar.update(1)
    return ForecastTable(warmup, point, upper, p_any), fit_seconds


def accuracy(table: ForecastTable, naive: ForecastTable, counts: np.ndarray) -> dict:
    """Next-minute skill on scored minutes (training/skill.py): MAE relative to seasonal naive
    (MASE, the naive forecast's error on the same minutes as the scale), the Brier score of
    P(any request) against the seasonal naive's and the series' own walk-forward base rate's
    (Brier skill), and the reliability (calibration curve) of P(any)."""
    m = np.arange(table.first_minute, table.first_minute + len(table.point))
    actual = counts[m]
    got = skill.skill(table.point[:, 0], naive.point[:, 0], table.p_any[:, 0], skill.own_base_rate(counts, m), actual)
    ok = ~np.isnan(actual)
    hit = (actual[ok] > 0).astype(float)
    curve = skill.reliability(table.p_any[ok, 0], hit)
    return {"mae": got.mae, "mae_seasonal_naive": got.mae_naive, "mase": got.mase,
            "brier": got.brier, "brier_seasonal_naive": float(np.mean((naive.p_any[ok, 0] - hit) ** 2)),
            "brier_base_rate": got.brier_base_rate, "brier_skill": got.brier_skill,
            "calibration_error": skill.calibration_error(curve), "reliability": curve}


def score(policy: str, settings: dict, result: SimResult, default: bool) -> dict:
    return {
        "policy": policy, "settings": settings, "default": default,
        "requests": result.requests, "cold_start_requests": result.cold_start_requests,
        "cold_start_pct": 100.0 * result.cold_start_requests / max(1, result.requests),
        "over_capacity_requests": result.over_capacity_requests,
        "latency_p50_s": result.latency_quantile(0.5), "latency_p99_s": result.latency_quantile(0.99),
        "pod_seconds": result.pod_seconds,
        "pod_seconds_per_1k_requests": 1000.0 * result.pod_seconds / max(1, result.requests),
        "scale_actions": result.scale_actions,
    }


def run(trace: Trace, cold_start_s: float, capacity_rps: float, sweep: bool, seed: int = 0,
        horizon: int = 5, plots: Path | None = None, with_fleet: bool = True,
        progress: bool = False) -> tuple[list[dict], dict]:
    n = len(trace.minutes)
    warmup = 2 * DAY if n >= 6 * DAY else max(10, n // 3)
    block = DAY if n >= 6 * DAY else max(5, (n - warmup) // 4)
    arrivals = trace.seconds.astype(np.int64) if trace.seconds is not None else spread_minutes(trace.minutes, seed)
    scored = np.ones(len(arrivals), dtype=bool)
    scored[: warmup * 60] = False
    scored &= ~trace.gap_seconds[: len(arrivals)]
    sim = SimConfig(capacity_rps=capacity_rps, cold_start_s=cold_start_s, seed=seed)
    minute_counts = np.nan_to_num(trace.minutes)

    forecaster = RateForecaster(horizon=horizon)
    began = time.perf_counter()
    # One global model, as the product ships it: the synthetic fleet the published forecaster
    # is trained on, plus this trace's own past (never its future), refitted every block.
    fleet = fleet_on_calendar(trace.start_minute, TRAIN_START_MINUTE) if with_fleet else None
    refits = len(range(warmup, n, block))
    bar = tqdm(total=refits, desc=f"{trace.name}: walk-forward refits", unit="fit", file=sys.stderr, disable=not progress)
    table, fit_s = walk_forward(trace, horizon, warmup, block, forecaster, companions=fleet, bar=bar)
    bar.close()
    naive = seasonal_naive_table(trace.minutes, warmup, n, horizon)
    ets = ets_table(trace.minutes, warmup, block, horizon)
    info = {"trace": trace.name, "minutes": n, "fit_on": "fleet+trace" if with_fleet else "trace", "warmup_minutes": warmup, "refit_every_minutes": block,
            "cold_start_s": cold_start_s, "capacity_rps": capacity_rps, "max_fit_seconds": round(fit_s, 2),
            "forecast_seconds": round(time.perf_counter() - began, 1), **accuracy(table, naive, trace.minutes),
            "ets": accuracy(ets, naive, trace.minutes)}

    skills = skill.rolling_skill(table.point[:, 0], table.p_any[:, 0], naive.point[:, 0], trace.minutes, warmup)
    fallback = FallbackSettings()
    base = PolicySettings(capacity_rps=capacity_rps, cold_start_cost_pod_s=DEFAULT_COST)  # window lever off
    with_window = replace(base, idle_window_s=IDLE_WINDOW_S)
    runs: list[tuple[str, dict, object, bool]] = [
        ("kpa", {}, KpaOnly(), True),
        ("predictive", {"cold_start_cost_pod_s": DEFAULT_COST, "window_lever": False},
         PolicyController(table, base, skills, fallback), True),
        ("predictive", {"cold_start_cost_pod_s": DEFAULT_COST, "window_lever": False, "fallback": "off"},
         PolicyController(table, base), False),
        ("predictive", {"cold_start_cost_pod_s": DEFAULT_COST, "window_lever": True}, PolicyController(table, with_window), False),
        ("predictive", {"cold_start_cost_pod_s": DEFAULT_COST, "window_lever": False, "burst_risk": "off"},
         PolicyController(table, replace(base, burst_risk=None)), False),
        ("predictive", {"cold_start_cost_pod_s": DEFAULT_COST, "window_lever": False, "busy_window": f"{BUSY_WINDOW_S:g}s"},
         PolicyController(table, replace(base, busy_window_s=BUSY_WINDOW_S), skills, fallback), False),
        ("kpa", {"window": f"{BUSY_WINDOW_S:g}s"}, FixedWindow(BUSY_WINDOW_S), False),
        ("keepalive", {"minutes": 10}, KeepAlive(10), True),
        ("hybrid_histogram", {"range_min": 240, "head_pct": 5, "tail_pct": 99}, HybridHistogram(), True),
        ("always_on", {"min_scale": 1}, AlwaysOn(), True),
        ("seasonal_naive", {"cold_start_cost_pod_s": DEFAULT_COST}, PolicyController(naive, base), True),
        ("seasonal_naive", {"cold_start_cost_pod_s": DEFAULT_COST, "busy_window": f"{BUSY_WINDOW_S:g}s"},
         PolicyController(naive, replace(base, busy_window_s=BUSY_WINDOW_S)), False),
        ("ets_baseline", {"model": "statsforecast AutoETS + Poisson", "cold_start_cost_pod_s": DEFAULT_COST},
         PolicyController(ets, base), True),
        ("oracle_minute", {"window_lever": False}, OracleMinute(arrivals, capacity_rps, sim.actuation_delay_s, cold_start_s, False), True),
        ("oracle_minute", {"window_lever": True}, OracleMinute(arrivals, capacity_rps, sim.actuation_delay_s, cold_start_s, True), False),
    ]
    if sweep:
        for cost in (60, 120, 600, 1200, 3000):
            for lever in (True, False):
                s = replace(base, cold_start_cost_pod_s=float(cost), idle_window_s=IDLE_WINDOW_S if lever else None)
                runs.append(("predictive", {"cold_start_cost_pod_s": cost, "window_lever": lever}, PolicyController(table, s), False))
        for risk in (0.01, 0.001):
            runs.append(("predictive", {"cold_start_cost_pod_s": DEFAULT_COST, "window_lever": False, "burst_risk": risk},
                         PolicyController(table, replace(base, burst_risk=risk)), False))
        for busy in (6.0, 30.0):
            runs.append(("predictive", {"cold_start_cost_pod_s": DEFAULT_COST, "window_lever": False, "busy_window": f"{busy:g}s"},
                         PolicyController(table, replace(base, busy_window_s=busy), skills, fallback), False))
        for minutes in (1, 2, 5, 20, 30, 60):
            runs.append(("keepalive", {"minutes": minutes}, KeepAlive(minutes), False))
    scores = []
    kept: dict[str, SimResult] = {}
    for policy, settings, controller, default in tqdm(runs, desc=f"{trace.name}: simulations", unit="policy",
                                                      file=sys.stderr, disable=not progress):
        result = simulate(arrivals, controller, sim, minute_counts, scored)
        scores.append(score(policy, settings, result, default))
        if default and policy in ("kpa", "predictive"):
            kept[policy] = result
        if default and policy == "predictive":
            info["fallback_minutes"] = controller.baseline_minutes  # decided by the keep-alive fallback
            info["forecast_minutes"] = len(table.point)
    kpa = scores[0]
    for s in scores:
        s["cold_start_vs_kpa"] = s["cold_start_requests"] / kpa["cold_start_requests"] if kpa["cold_start_requests"] else float("nan")
        s["pod_seconds_vs_kpa"] = s["pod_seconds"] / kpa["pod_seconds"] if kpa["pod_seconds"] else float("nan")
        s["over_capacity_vs_kpa"] = s["over_capacity_requests"] / kpa["over_capacity_requests"] if kpa["over_capacity_requests"] else float("nan")
    if plots is not None:
        from training.plots import day_plot, pareto_plot, reliability_plot

        plots.mkdir(parents=True, exist_ok=True)
        stem = trace.name.split(".")[0]
        day_plot(plots / f"{stem}_day.png", trace, table, kept["predictive"], kept["kpa"], warmup)
        reliability_plot(plots / f"{stem}_reliability.png", trace.name, {"forecaster": info["reliability"]})
        pareto_plot(plots / f"{stem}_pareto.png", trace.name, scores)
    return scores, info


def print_table(scores: list[dict], info: dict) -> None:
    print(f"\n## {info['trace']}: {info['minutes']} min, warm-up {info['warmup_minutes']} min not scored, "
          f"refit every {info['refit_every_minutes']} min, cold start {info['cold_start_s']} s, "
          f"{info['capacity_rps']} req/s per pod, forecaster fitted on {info['fit_on']}")
    print(f"forecast (next minute): MASE vs seasonal naive {info['mase']:.3f} (MAE {info['mae']:.3f} vs {info['mae_seasonal_naive']:.3f}); "
          f"Brier P(any) {info['brier']:.4f} vs seasonal naive {info['brier_seasonal_naive']:.4f}, vs own base rate "
          f"{info['brier_base_rate']:.4f}: Brier skill {info['brier_skill']:+.3f}; longest fit {info['max_fit_seconds']} s")
    print(f"reliability of P(any) (predicted -> observed, minutes), calibration error {info['calibration_error']:.4f}: "
          f"{skill.format_reliability(info['reliability'])}")
    if "fallback_minutes" in info:
        print(f"fallback (default predictive row): the keep-alive decided {info['fallback_minutes']} of "
              f"{info['forecast_minutes']} forecast minutes (rolling 60-minute Brier skill of P(any) below 0: scale.fallback)")
    e = info["ets"]
    print(f"off-the-shelf baseline (statsforecast AutoETS, Poisson around its mean): MASE vs seasonal naive {e['mase']:.3f}; "
          f"Brier P(any) {e['brier']:.4f}, Brier skill vs own base rate {e['brier_skill']:+.3f}\n")
    print("| policy | settings | requests | cold | cold % | cold vs KPA | over capacity | over cap vs KPA | "
          "p50 s | p99 s | pod-s | pod-s vs KPA | pod-s / 1k req | scale actions |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for s in scores:
        settings = ", ".join(f"{k}={v}" for k, v in s["settings"].items()) + (" (default)" if s["default"] else "")
        print(f"| {s['policy']} | {settings} | {s['requests']} | {s['cold_start_requests']} | {s['cold_start_pct']:.2f} | "
              f"{s['cold_start_vs_kpa']:.3f} | {s['over_capacity_requests']} | {s['over_capacity_vs_kpa']:.3f} | "
              f"{s['latency_p50_s']:.0f} | {s['latency_p99_s']:.0f} | {s['pod_seconds']:.0f} | {s['pod_seconds_vs_kpa']:.3f} | "
              f"{s['pod_seconds_per_1k_requests']:.1f} | {s['scale_actions']} |")


def _budget(text: str) -> float:
    """FLEET_BUDGET's rule (a finite multiple >= 0), as the scale function reads it."""
    value = float(text)
    if not (value >= 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"the fleet budget is a multiple >= 0 of per-model Knative's spend, not {text!r}")
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.backtest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--trace", type=Path, action="append", default=[])
    parser.add_argument("--fleet", type=Path, action="append", default=[],
                        help="a fleet file (timestamp,service,requests + sidecar): training/fleet_backtest.py")
    parser.add_argument("--max-scale", type=int, default=1000, help="fleet: max-scale of every Service")
    parser.add_argument("--fleet-budget", type=_budget, default=None,
                        help="fleet: spend this multiple (>= 0) of per-model Knative's pod-seconds (the pool plan's "
                             "ratio budget, FLEET_BUDGET)")
    parser.add_argument("--models-per-pod", type=int, default=None,
                        help="fleet: a pool pod's memory budget in models (default: what the scale function reads from "
                             "serving/pool/infer-pool.yaml: POOL_MEMORY_MB / predictive-scaling.io/model-memory-mb)")
    parser.add_argument("--model-load-ms", type=float, default=None,
                        help="fleet: a model's load time in a pool pod (default: what the scale function reads from "
                             "serving/pool/infer-pool.yaml: predictive-scaling.io/model-load-ms, else POOL_MODEL_LOAD_MS)")
    parser.add_argument("--warmup-days", type=int, default=2, help="fleet: days simulated before scoring starts")
    parser.add_argument("--info", type=Path, default=None,
                        help="fleet: also write what each run found besides its scores (skill, placement, the warmth "
                             "chosen, timings) to this JSON file, one object per fleet (docs/results render it)")
    parser.add_argument("--cold-start-s", type=float, default=5.0)
    parser.add_argument("--capacity-rps", type=float, default=10.0)
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.add_argument("--plots", type=Path, default=None)
    parser.add_argument("--sweep", action="store_true", help="also sweep our cost knob and the keep-alive")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fit-on", choices=("fleet+trace", "trace"), default="fleet+trace",
                        help="walk-forward training data: the synthetic fleet plus the trace's past (the "
                             "global model, default), or the trace's past alone")
    parser.add_argument("--prometheus", metavar="URL", help="what-if: read every matching service's history from "
                        "this Prometheus, as the forecast function does (training/whatif.py)")
    parser.add_argument("--preset", default="knative-1.21", help="what-if: the metrics preset (METRICS_PRESET)")
    parser.add_argument("--selector", default="", help="what-if: extra label matchers (SERVICE_SELECTOR)")
    parser.add_argument("--heartbeat", default=None, help="what-if: HEARTBEAT_SELECTOR, when not the preset's")
    parser.add_argument("--days", type=float, default=7.0, help="what-if: days of history read")
    parser.add_argument("--end", default=None, help="what-if: where the history ends (ISO time or epoch s; default now)")
    args = parser.parse_args(argv)
    if not args.trace and not args.fleet and not args.prometheus:
        parser.error("give --trace, --fleet and/or --prometheus")
    if args.prometheus:
        what_if(args)
    if args.fleet:
        from training.fleet_backtest import main_fleets

        main_fleets(args)
    if not args.trace:
        return
    everything = []
    for path in args.trace:
        print(f"# {path.name} ...", file=sys.stderr, flush=True)
        scores, info = run(load_trace(path), args.cold_start_s, args.capacity_rps, args.sweep, args.seed, plots=args.plots,
                           with_fleet=args.fit_on == "fleet+trace", progress=True)
        if args.format == "json":
            everything += [{**s, "trace": info["trace"]} for s in scores]
        else:
            print_table(scores, info)
    if args.format == "json":
        json.dump(everything, sys.stdout, indent=1, default=float)
        print()


def what_if(args) -> None:
    """Backtest every service the Prometheus at `args.prometheus` has history for: each as a
    single trace, then, when there are several, as a fleet."""
    from training import whatif

    end = whatif.parse_end(args.end)
    start = end - int(round(args.days * DAY))
    series = whatif.read_history(args.prometheus, args.preset, args.selector, args.days, end, args.heartbeat)
    busy = {k: v for k, v in series.items() if np.nansum(v) > 0}
    print(f"# what-if: {len(series)} services in Prometheus ({args.preset}, selector {args.selector or '-'}), "
          f"{len(busy)} with requests, {args.days:g} days to {whatif.iso(end)}", file=sys.stderr, flush=True)
    if not busy:
        raise SystemExit("what-if: no service had a request in that span: check --preset, --selector and --days")
    everything = []
    for name, counts in sorted(busy.items()):
        print(f"# {name} ...", file=sys.stderr, flush=True)
        scores, info = run(whatif.as_trace(name, counts, start), args.cold_start_s, args.capacity_rps, args.sweep,
                           args.seed, plots=args.plots, with_fleet=args.fit_on == "fleet+trace", progress=True)
        if args.format == "json":
            everything += [{**s, "trace": info["trace"]} for s in scores]
        else:
            print_table(scores, info)
    fleet: list[dict] = []
    if len(busy) > 1 and args.days < args.warmup_days + 1:
        print(f"# fleet form skipped: it needs more than {args.warmup_days} days (--warmup-days) of history",
              file=sys.stderr)
    elif len(busy) > 1:
        from training.fleet_backtest import main_fleets

        fleet = main_fleets(args, [whatif.as_fleet(f"prometheus-{args.preset}", busy, start, args.seed)], emit_json=False)
    if args.format == "json":
        json.dump({"services": everything, "fleet": fleet}, sys.stdout, indent=1, default=float)
        print()


if __name__ == "__main__":
    main()
