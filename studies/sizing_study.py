"""Where per-model Knative's requests over capacity come from on a fleet, and what the min-scale
policy's sizing costs and saves there, walk-forward, on the busy tenants (those the pooled design
dedicates a Service to).

    python -m studies.sizing_study --fleet FILE.csv [--cache DIR] [--min-rate 7] [--diagnose]

Subset: the tenants whose mean rate over the whole span is at least `--min-rate` req/s (default
7: scale.placement's dedicate threshold, 70% of one pod, the tenants the pooled design gives a
Service of their own), every day of the span; the first two days are warm-up (not scored), as in
the fleet backtest. Forecasts are the fleet backtest's own (`walk_forward`, refitted daily on
every tenant's past), cached in `--cache` so that the study can be re-run on the same forecasts.

`--diagnose` splits Knative's over-capacity requests by cause, from each lane's recorded ready
pods and its per-second arrivals (the simulator's own serving rule, backlog first):
- `start`: in a 600 s source window that follows an idle one (an active period begins);
- `step`: in the first 120 s of a window with more requests than the one before (Knative's 60 s
  stable window and a 5 s cold start lag behind a step up at the window boundary);
- `noise`: everything else (the rate is flat within a window: the busiest seconds of a Poisson
  stream over the pods Knative keeps at 70% of their capacity).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import replace
from pathlib import Path

import numpy as np

from scale.min_scale_policy import LEAD_MINUTES, MinuteForecast, PolicySettings, busy_trigger, error_headroom, minute_pods
from training.fleet_backtest import (DAY, FleetOptions, Forecasts, Placer, PolicySchedule, oracle_schedule, span_peaks,
                                     walk_forward)
from training.fleet_sim import DAY_S, FleetSimConfig, simulate_lanes
from training.fleet_trace import FleetTrace, load_fleet

SIZE_EDGES = (0.7, 7.0, 70.0, 700.0)
"""Size classes by mean req/s (10 per pod): under 7% of a pod, under the dedicate threshold (70%
of a pod), 1-10, 10-100 and 100+ pods' worth at Knative's 70% target."""
STEP_SECONDS = 120
STEP_RATIOS = (1 / 0.7, 1.6, 2.0, 3.0)
"""Buckets of a step's size (window count over the one before): up to Knative's 43% headroom,
then up to its panic threshold (2x) in two, then beyond."""


def size_class(rate: float) -> str:
    edges = (0.0,) + SIZE_EDGES + (math.inf,)
    for lo, hi in zip(edges, edges[1:]):
        if lo <= rate < hi:
            return f"{lo:g}-{hi:g} req/s"
    raise ValueError(rate)


class _Quiet:
    def update(self, n: int) -> None:
        pass


def cached_forecasts(fleet: FleetTrace, options: FleetOptions, cache: Path) -> tuple[np.ndarray, Forecasts]:
    """(minute counts, per-model walk-forward forecasts) of the whole fleet, as the fleet
    backtest makes them (placement included: it decides the pool series the model is fitted on)."""
    path = cache / f"{fleet.name}.forecasts.npz"
    if path.exists():
        z = np.load(path)
        return z["counts"], Forecasts(z["point"], z["upper"], z["p_any"])
    counts = fleet.minute_counts()
    placer = Placer(counts.shape[0], options.placement)
    per_model, _, _, _ = walk_forward(counts, fleet, options, lambda forecasts: placer, _Quiet())
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, counts=counts, point=per_model.point, upper=per_model.upper, p_any=per_model.p_any)
    return counts, per_model


ERROR_WINDOW_MINUTES = 60
ERROR_MIN_MINUTES = 10


def schedules(fc: Forecasts, rows: np.ndarray, settings: PolicySettings, n: int, counts: np.ndarray | None = None,
              error_quantile: float | None = None) -> np.ndarray:
    """PolicySchedule over each series. With `error_quantile`, every minute's settings carry
    the series' own `error_headroom` over the last ERROR_WINDOW_MINUTES complete minutes of the
    same day (the forecaster is refitted daily, and a refit changes its errors), from backed
    minutes only; with fewer than ERROR_MIN_MINUTES of them, the forecaster's upper quantile."""
    out = np.zeros((len(rows), n), np.int64)
    for k, i in enumerate(rows):
        schedule = PolicySchedule(fc.point[i], fc.upper[i], fc.p_any[i])
        if error_quantile is None:
            schedule.fill([out[k]], 0, n, [settings])
            continue
        heads = rolling_error_headroom(counts[i], fc.point[i, :, 0], fc.upper[i, :, 0], error_quantile)
        for m in range(n):
            # A schedule of this one minute: `fill` converts its whole series on each call, and
            # each call starts from min-scale 0 (the state is not carried across calls), so a
            # one-row schedule decides the same as the whole series' did, in linear time.
            h = heads[m]
            one = PolicySchedule(fc.point[i, m:m + 1], fc.upper[i, m:m + 1], fc.p_any[i, m:m + 1])
            one.fill([out[k, m:m + 1]], 0, 1, [settings if np.isnan(h) else replace(settings, headroom=float(h))])
    return out


def busy_windows(fc: Forecasts, rows: np.ndarray, settings: PolicySettings, n: int,
                 counts: np.ndarray | None = None) -> np.ndarray:
    """The stable window the scale function sets each minute with the busy-window lever on
    (`settings.busy_window_s`): the lever's window where `scale.min_scale_policy.busy_trigger`
    says so, as `decide` calls it (the covered minutes' forecasts and the last observed minute's
    rate, from `counts`: per-minute counts, a row per series; None: no minute observed, the
    forecast trigger alone), else 0 (the Service's own); minutes without a forecast hold, and
    holding leaves the window alone."""
    out = np.zeros((len(rows), n), np.int64)
    if not settings.busy_window_s:
        return out
    h = min(LEAD_MINUTES, fc.point.shape[2])
    for k, i in enumerate(rows):
        point, upper, p_any = fc.point[i, :, :h].tolist(), fc.upper[i, :, :h].tolist(), fc.p_any[i, :, :h].tolist()
        seen = [None] * n if counts is None else [None] + [None if c != c else c / 60.0 for c in counts[k, :n - 1].tolist()]
        for m in range(n):
            if math.isnan(point[m][0]):
                continue
            covered = [MinuteForecast(point[m][j] / 60.0, upper[m][j] / 60.0, p_any[m][j]) for j in range(h)]
            if busy_trigger(covered, settings, seen[m]):
                out[k, m] = int(round(settings.busy_window_s))
    return out


def rolling_error_headroom(actual: np.ndarray, point: np.ndarray, upper: np.ndarray, quantile: float) -> np.ndarray:
    """scale.min_scale_policy.error_headroom (per-minute counts against each minute's own point
    forecast) at every minute over the window before it: NaN where it has too few backed minutes."""
    n = len(actual)
    backed_minute = (point > 0) & (upper > point) & ~np.isnan(actual)
    out = np.full(n, np.nan)
    for m in range(n):
        lo = max(m - ERROR_WINDOW_MINUTES, (m // DAY) * DAY)
        keep = np.flatnonzero(backed_minute[lo:m]) + lo
        if len(keep) >= ERROR_MIN_MINUTES:
            h = error_headroom(actual[keep].tolist(), point[keep].astype(float).tolist(), quantile)
            out[m] = np.nan if h is None else h
    return out


def waiting_per_second(arrivals: np.ndarray, ready: np.ndarray, capacity: float) -> np.ndarray:
    """Requests not served within their arrival second while pods were ready (the simulator's
    rule: the backlog is served first, then new arrivals, up to ready x capacity per second)."""
    budget = (ready.astype(np.int64) * int(capacity))
    out = np.zeros(len(arrivals), np.int64)
    candidates = np.flatnonzero(arrivals > budget)  # with no pod ready, the activator's buffer builds
    backlog, last = 0, -1
    for s in candidates:
        if s <= last:
            continue
        t = s
        while t < len(arrivals):
            served_old = min(backlog, budget[t])
            served_new = min(int(arrivals[t]), budget[t] - served_old)
            waiting = int(arrivals[t]) - served_new
            if ready[t] > 0:
                out[t] = waiting
            backlog += waiting - served_old
            if backlog == 0 and t > s:
                break
            t += 1
        last = t
    return out


def diagnose(fleet: FleetTrace, lanes: np.ndarray, options: FleetOptions, days: range) -> dict[int, dict[str, int]]:
    """Knative's over-capacity requests of each tenant split by cause, on `days` (the first
    hour of the run is Knative warming up from zero, not scored)."""
    config = FleetSimConfig(capacity_rps=options.capacity_rps, cold_start_s=options.cold_start_s, max_scale=options.max_scale)
    first = days.start
    seconds = len(days) * DAY_S
    streams = lambda d: fleet.day_arrivals(first + d)[lanes]  # noqa: E731
    schedule = np.zeros((len(lanes), len(days) * DAY), np.int64)
    run = simulate_lanes(streams, np.arange(len(lanes)), schedule, config, seconds, 3600, record=tuple(range(len(lanes))))
    windows = np.zeros((len(fleet.services), fleet.seconds // fleet.bin_seconds + 1), np.int64)
    np.add.at(windows, (fleet.service_index, fleet.bins), fleet.counts)
    out: dict[int, dict[str, int]] = {}
    arrivals = np.concatenate([fleet.day_arrivals(d)[lanes] for d in days], axis=1)
    for k, i in enumerate(lanes):
        wait = waiting_per_second(arrivals[k], run.ready[k], options.capacity_rps)
        wait[:3600] = 0
        s = np.flatnonzero(wait) + first * DAY_S
        w = s // fleet.bin_seconds
        prev = windows[i, np.maximum(w - 1, 0)]
        cur = windows[i, w]
        start = prev == 0
        step = ~start & (cur > prev) & (s - w * fleet.bin_seconds < STEP_SECONDS)
        v = wait[s - first * DAY_S]
        ratio = np.digitize(cur[step] / np.maximum(prev[step], 1), STEP_RATIOS)
        by_ratio = np.bincount(ratio, weights=v[step], minlength=len(STEP_RATIOS) + 1).astype(np.int64)
        out[int(i)] = {"step_by_ratio": by_ratio, "start": int(v[start].sum()), "step": int(v[step].sum()), "noise": int(v[~start & ~step].sum()),
                       "total": int(run.totals.over[k]), "requests": int(run.totals.requests[k]),
                       "pod_seconds": int(run.totals.pod_seconds[k])}
    return out


def forecast_sizing(counts: np.ndarray, fc: Forecasts, lanes: np.ndarray, settings: PolicySettings,
                    warmup: int, window_minutes: int) -> list[dict]:
    """Why the policy's min-scale exceeds what Knative keeps, per tenant: over scored minutes,
    the forecast's point and upper quantile against the minute's actual count, the pods the
    upper quantile asks for with and without peak-second sizing, against Knative's steady pods
    (ceil(rate / (capacity x 70%)) at the actual rate); and whether the forecast made a minute
    before a window boundary sees a step up of more than Knative's 43% headroom."""
    n = counts.shape[1]
    target = settings.capacity_rps * 0.7
    rows = []
    plain = replace(settings, burst_risk=None)
    for i in lanes:
        c = counts[i, warmup:]
        point, upper = fc.point[i, warmup:, 0].astype(float), fc.upper[i, warmup:, 0].astype(float)
        ok = ~np.isnan(point)
        c, point, upper = c[ok], point[ok], upper[ok]
        kpa = np.ceil(c / 60.0 / target - 1e-9)
        with_peak = np.array([_pods(u / 60.0, settings) for u in upper])
        without = np.array([_pods(u / 60.0, plain) for u in upper])
        minutes = np.arange(warmup, n)[ok]
        boundary = minutes[(minutes % window_minutes == 0) & (minutes > warmup)]
        before, after = counts[i, boundary - 1], counts[i, boundary]
        big = (before > 0) & (after > before / 0.7)
        seen_point = fc.point[i, boundary - 1, 1] / 0.7 >= after  # Knative's headroom over the forecast covers it
        seen_upper = fc.upper[i, boundary - 1, 1] >= after
        rel = c[point > 0] / point[point > 0]
        unbacked = ~(upper > point)
        rows.append({"tenant": int(i), "actual": float(c.sum()), "point": float(point.sum()), "upper": float(upper.sum()),
                     "kpa_pods": float(kpa.sum()), "upper_pods": float(with_peak.sum()), "upper_pods_mean_only": float(without.sum()),
                     "q90_actual_over_point": float(np.quantile(rel, 0.9)) if len(rel) else float("nan"),
                     "median_upper_over_actual": float(np.median(upper[c > 0] / c[c > 0])) if (c > 0).any() else float("nan"),
                     "minutes": int(len(c)), "unbacked_minutes": int(unbacked.sum()),
                     "upper_pods_unbacked": float(with_peak[unbacked].sum()),
                     "max_scale_minutes": int((with_peak >= settings.max_scale).sum()),
                     "big_steps": int(big.sum()), "boundaries": int(len(boundary)),
                     "big_steps_seen_point": int((big & seen_point).sum()), "big_steps_seen_upper": int((big & seen_upper).sum())})
    return rows


def _pods(rate: float, settings: PolicySettings) -> int:
    """The policy's pods for a minute whose upper quantile is `rate` req/s."""
    return minute_pods(MinuteForecast(0.0, rate, 1.0), settings)


def print_forecast_sizing(rows: list[dict], rate: np.ndarray) -> None:
    print("\nthe forecast against the actual minute (scored minutes, next-minute forecast), sums per tenant size\n")
    print("| tenant size | tenants | point / actual | upper / actual | median tenant's median minute upper / actual | median tenant q90(actual / point) | pods for upper, mean only / Knative's steady pods | "
          "pods for upper's peak second / Knative's | minutes unbacked (upper <= point) | their share of those pods | minutes at max-scale | "
          "boundary steps > 43% | seen by point x 1/0.7 | seen by upper |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    classes: dict[str, list[dict]] = {}
    for r in rows:
        classes.setdefault(size_class(float(rate[r["tenant"]])), []).append(r)
    for name in sorted(classes, key=lambda x: float(x.split("-")[0])):
        rs = classes[name]
        tot = {k: sum(r[k] for r in rs) for k in rs[0] if k not in ("tenant", "median_upper_over_actual", "q90_actual_over_point")}
        q90 = float(np.nanmedian([r["q90_actual_over_point"] for r in rs]))
        typical = float(np.nanmedian([r["median_upper_over_actual"] for r in rs]))
        print(f"| {name} | {len(rs)} | {tot['point'] / tot['actual']:.3f} | {tot['upper'] / tot['actual']:.3f} | {typical:.3f} | {q90:.3f} | "
              f"{tot['upper_pods_mean_only'] / tot['kpa_pods']:.3f} | {tot['upper_pods'] / tot['kpa_pods']:.3f} | "
              f"{tot['unbacked_minutes'] / tot['minutes']:.1%} | {tot['upper_pods_unbacked'] / max(1.0, tot['upper_pods']):.1%} | "
              f"{tot['max_scale_minutes'] / tot['minutes']:.2%} | "
              f"{tot['big_steps']} of {tot['boundaries']} | {tot['big_steps_seen_point'] / max(1, tot['big_steps']):.1%} | "
              f"{tot['big_steps_seen_upper'] / max(1, tot['big_steps']):.1%} |")


def compare(fleet: FleetTrace, lanes: np.ndarray, counts: np.ndarray, fc: Forecasts, options: FleetOptions,
            variants: dict[str, PolicySettings], error_variants: dict[str, tuple[PolicySettings, float]] | None = None,
            stable_windows: tuple[float, ...] = (), busy_window: float | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Per-model Knative, the once-a-minute oracle and the policy under each settings variant on
    the same arrivals of the `lanes` tenants (each a Service of its own, as the busy tenants are
    in the pooled design), scored after the warm-up days: per-tenant totals of each. Each of
    `stable_windows` (seconds) re-runs Knative and every policy with that stable window set on
    the Services (autoscaling.knative.dev/window), rows named `... @ window Ns`. With
    `busy_window` (seconds), the default policy also runs with the busy-window lever on, the
    window set minute by minute as the scale function sets it (`busy_windows`), row
    `policy + busy window Ns`, and with its forecast trigger alone (the lever before it read the
    last observed minute), row `policy + busy window Ns, forecast trigger only`."""
    n = counts.shape[1]
    error_variants = error_variants or {}
    names = ["kpa", "oracle"] + list(variants) + list(error_variants)
    sub = Forecasts(fc.point[lanes], fc.upper[lanes], fc.p_any[lanes])
    streams = lambda d: fleet.day_arrivals(d)[lanes]  # noqa: E731
    peaks = span_peaks(streams, fleet.days, n, options)
    rows = [np.zeros((len(lanes), n), np.int64), oracle_schedule(peaks, options.capacity_rps)]
    rows += [schedules(sub, np.arange(len(lanes)), s, n) for s in variants.values()]
    rows += [schedules(sub, np.arange(len(lanes)), s, n, counts[lanes], q) for s, q in error_variants.values()]
    windows = [np.zeros((len(lanes), n), np.int64) for _ in rows]
    if busy_window:
        base = next(iter(variants.values()))
        lever = replace(base, busy_window_s=float(busy_window))
        for name, seen in ((f"policy + busy window {busy_window:g}s", counts[lanes]),
                           (f"policy + busy window {busy_window:g}s, forecast trigger only", None)):
            names.append(name)
            rows.append(rows[2])  # the lever changes the window only: the min-scale schedule is the default's
            windows.append(busy_windows(sub, np.arange(len(lanes)), lever, n, seen))
    config = FleetSimConfig(capacity_rps=options.capacity_rps, cold_start_s=options.cold_start_s, max_scale=options.max_scale)
    k = len(lanes)
    out: dict[str, dict[str, np.ndarray]] = {}
    for window in (None, *stable_windows):
        if window is None:
            cfg, suffix, keep = config, "", names
        else:
            cfg = replace(config, kpa=replace(config.kpa_config(), stable_window_s=float(window)))
            suffix, keep = f" @ window {window:g}s", [x for x in names if x != "oracle"]
        pick = [names.index(x) for x in keep]
        levered = [j for j in pick if windows[j].any()]
        if window is not None:
            keep = [x for x in keep if names.index(x) not in levered]  # a fixed window replaces the lever's
            pick = [names.index(x) for x in keep]
        run = simulate_lanes(streams, np.tile(np.arange(k), len(keep)), np.concatenate([rows[j] for j in pick]), cfg,
                             fleet.seconds, options.warmup_days * DAY_S, window=np.concatenate([windows[j] for j in pick]))
        t = run.totals
        out.update({name + suffix: {"requests": t.requests[j * k:(j + 1) * k], "cold": t.cold[j * k:(j + 1) * k],
                                    "over": t.over[j * k:(j + 1) * k], "pod_seconds": t.pod_seconds[j * k:(j + 1) * k]}
                    for j, name in enumerate(keep)})
    return out


def print_compare(result: dict[str, dict[str, np.ndarray]], lanes: np.ndarray, rate: np.ndarray, title: str) -> None:
    print(f"\n{title}: ratios to per-model Knative (kpa) in the same run\n")
    print("| tenant size | tenants | policy | over capacity | over cap vs KPA | pod-s | pod-s vs KPA | cold | cold vs KPA |")
    print("|---|---|---|---|---|---|---|---|---|")
    sizes = np.array([size_class(float(rate[i])) for i in lanes])
    for name in sorted(set(sizes), key=lambda x: float(x.split("-")[0])) + ["all"]:
        mask = np.ones(len(lanes), bool) if name == "all" else sizes == name
        kpa = {key: int(v[mask].sum()) for key, v in result["kpa"].items()}
        for policy, totals in result.items():
            mine = {key: int(v[mask].sum()) for key, v in totals.items()}
            ratio = lambda key: f"{mine[key] / kpa[key]:.3f}" if kpa[key] else "-"  # noqa: E731
            print(f"| {name} | {int(mask.sum())} | {policy} | {mine['over']} | {ratio('over')} | {mine['pod_seconds']} | "
                  f"{ratio('pod_seconds')} | {mine['cold']} | {ratio('cold')} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fleet", required=True, type=Path)
    p.add_argument("--cache", type=Path, default=Path("reports/sizing"))
    p.add_argument("--min-rate", type=float, default=7.0)
    p.add_argument("--diagnose", action="store_true")
    p.add_argument("--forecast-sizing", action="store_true")
    p.add_argument("--headroom", type=float, nargs="*", default=(), help="uniform headroom values to score")
    p.add_argument("--error-quantile", type=float, nargs="*", default=(0.9,),
                   help="score the policy with each Service's own error_headroom at these quantiles")
    p.add_argument("--all-tenants", action="store_true", help="score every tenant, not only the busy ones")
    p.add_argument("--no-compare", action="store_true", help="the analyses only, no policy simulation")
    p.add_argument("--stable-window", type=float, nargs="*", default=(),
                   help="also score Knative and every policy with this stable window (seconds) on the Services")
    p.add_argument("--busy-window", type=float, default=None,
                   help="also score the default policy with the busy-window lever (BUSY_WINDOW) at this many seconds")
    p.add_argument("--diagnose-days", type=int, nargs=2, default=(2, 5), metavar=("FIRST", "END"))
    args = p.parse_args()
    fleet = load_fleet(args.fleet)
    options = FleetOptions()
    rate = fleet.totals() / fleet.seconds
    lanes = np.flatnonzero(rate > 0) if args.all_tenants else np.flatnonzero(rate >= args.min_rate)
    print(f"{fleet.name}: {len(lanes)} of {len(rate)} tenants with mean rate >= {args.min_rate:g} req/s "
          f"({fleet.totals()[lanes].sum() / fleet.totals().sum():.1%} of requests)")
    if args.diagnose:
        report = diagnose(fleet, np.flatnonzero(rate > 0), options, range(*args.diagnose_days))
        print_diagnosis(report, rate, args.diagnose_days)
    counts, fc = cached_forecasts(fleet, options, args.cache)
    base = PolicySettings(capacity_rps=options.capacity_rps, cold_start_cost_pod_s=options.cost, max_scale=options.max_scale)
    warmup = options.warmup_days * DAY
    if args.forecast_sizing:
        print_forecast_sizing(forecast_sizing(counts, fc, np.flatnonzero(rate > 0), base, warmup, fleet.bin_seconds // 60), rate)
    variants = {"policy (default)": base}
    variants.update({f"point x {h:g}": replace(base, headroom=h) for h in args.headroom})
    if args.no_compare:
        return
    errors = {f"point x own q{q:g} error": (base, q) for q in args.error_quantile}
    result = compare(fleet, lanes, counts, fc, options, variants, errors, tuple(args.stable_window), args.busy_window)
    print_compare(result, lanes, rate, f"{len(lanes)} tenants, each its own Service, days {options.warmup_days}-{fleet.days - 1} scored")


def print_diagnosis(report: dict[int, dict[str, int]], rate: np.ndarray, days: tuple[int, int]) -> None:
    print(f"\nper-model Knative (min-scale 0), days {days[0]}-{days[1] - 1}, over-capacity requests by cause\n")
    print("| tenant size | tenants | requests | over capacity | over % | start of active period | step up at a window boundary | noise within a window | split / simulator |")
    print("|---|---|---|---|---|---|---|---|---|")
    classes: dict[str, dict[str, int]] = {}
    for i, r in report.items():
        c = classes.setdefault(size_class(float(rate[i])), {"tenants": 0, "requests": 0, "total": 0, "start": 0, "step": 0, "noise": 0})
        c["tenants"] += 1
        for key in ("requests", "total", "start", "step", "noise"):
            c[key] += r[key]
    for name in sorted(classes, key=lambda x: float(x.split("-")[0])):
        c = classes[name]
        parts = sum(c[k] for k in ("start", "step", "noise")) or 1
        print(f"| {name} | {c['tenants']} | {c['requests']} | {c['total']} | {100 * c['total'] / max(1, c['requests']):.3f} | "
              f"{c['start'] / parts:.1%} | {c['step'] / parts:.1%} | {c['noise'] / parts:.1%} | {parts / max(1, c['total']):.3f} |")
    edges = ("1",) + tuple(f"{r:.2f}" for r in STEP_RATIOS) + ("inf",)
    print("\nstep over-capacity requests by step size (window count / previous window's)\n")
    print("| tenant size | " + " | ".join(f"{a}-{b}x" for a, b in zip(edges, edges[1:])) + " |")
    print("|---|" + "---|" * (len(edges) - 1))
    for name in sorted(classes, key=lambda x: float(x.split("-")[0])):
        v = sum(r["step_by_ratio"] for i, r in report.items() if size_class(float(rate[i])) == name)
        print(f"| {name} | " + " | ".join(f"{x / max(1, v.sum()):.1%}" for x in v) + " |")


if __name__ == "__main__":
    main()
