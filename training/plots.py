"""PNG plots of a backtest: a day of actual vs forecast vs replicas, and the Pareto front."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

DAY = 1440


def day_plot(path: Path, trace, table, predictive, kpa, warmup: int) -> None:
    """The busiest scored day: requests per minute, the forecast, and the pods each policy ran."""
    counts = np.nan_to_num(trace.minutes)
    days = max(1, (len(counts) - warmup) // DAY)
    starts = [warmup + d * DAY for d in range(days)]
    start = max(starts, key=lambda s: counts[s:s + DAY].sum()) if len(counts) - warmup >= DAY else warmup
    end = min(len(counts), start + DAY)
    minutes = np.arange(start, end)
    rows = minutes - table.first_minute
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 6), sharex=True)
    top.plot(minutes - start, counts[start:end], lw=0.8, label="requests / min (actual)")
    top.plot(minutes - start, table.point[rows, 0], lw=0.8, label="forecast (next minute)")
    top.plot(minutes - start, table.upper[rows, 0], lw=0.6, ls="--", label="upper quantile")
    top.legend(loc="upper right")
    top.set_ylabel("requests / minute")
    top.set_title(f"{trace.name}: busiest scored day")
    bottom.step(minutes - start, kpa.pods_per_minute[start:end], lw=0.8, label="pods, KPA alone")
    bottom.step(minutes - start, predictive.pods_per_minute[start:end], lw=0.8, label="pods, KPA + predictive")
    bottom.plot(minutes - start, table.p_any[rows, 0], lw=0.6, label="P(any request)")
    bottom.set_xlabel("minute of the day window")
    bottom.set_ylabel("pods (mean per minute)")
    bottom.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def pareto_plot(path: Path, name: str, scores: list[dict]) -> None:
    fig, ax = plt.subplots(figsize=(7, 5))
    markers = {"kpa": "s", "predictive": "o", "keepalive": "^", "hybrid_histogram": "D", "always_on": "v",
               "seasonal_naive": "P", "oracle_minute": "*"}
    for policy, marker in markers.items():
        pts = [(s["pod_seconds_vs_kpa"], s["cold_start_pct"], s["settings"]) for s in scores if s["policy"] == policy]
        if not pts:
            continue
        if policy == "predictive":
            for lever, style in ((True, "-"), (False, ":")):
                line = sorted((x, y) for x, y, st in pts if st.get("window_lever") == lever)
                if line:
                    ax.plot(*zip(*line), style, marker=marker, label=f"predictive ({'both levers' if lever else 'min-scale only'})")
            continue
        xs, ys = zip(*sorted((x, y) for x, y, _ in pts))
        ax.plot(xs, ys, marker=marker, ls="-" if len(xs) > 1 else "", label=policy)
    for s in scores:
        if s["policy"] == "predictive" and s["default"]:
            ax.annotate("default", (s["pod_seconds_vs_kpa"], s["cold_start_pct"]), textcoords="offset points",
                        xytext=(6, 6), fontsize=8)
    # Log-like scale: the region that matters (a few % and below) would be a flat line otherwise.
    ax.set_yscale("symlog", linthresh=0.5)
    ax.set_xlabel("pod-seconds / KPA's")
    ax.set_ylabel("cold-start requests, % of requests")
    ax.set_title(f"{name}: cold starts vs cost")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fleet_pareto_plot(path: Path, name: str, scores: list[dict]) -> None:
    """Every fleet policy and setting: cold-start requests against pod-seconds, both as ratios
    to per-model Knative; per-model designs hollow, pooled designs filled."""
    fig, ax = plt.subplots(figsize=(8, 5.5))
    markers = {"kpa": "s", "keepalive": "^", "hybrid_histogram": "D", "predictive_per_model": "o",
               "oracle_per_model": "*", "pool_kpa": "s", "pool_keepalive": "^", "pool_predictive": "v",
               "predictive": "o", "oracle_pooled": "*", "pool_all_kpa": "X"}
    pooled = {"pool_kpa", "pool_keepalive", "pool_predictive", "predictive", "oracle_pooled", "pool_all_kpa"}
    floor = 1e-4  # the log axis cannot show 0: a policy with no cold start sits on the floor
    for policy, marker in markers.items():
        pts = sorted((s["pod_seconds_vs_kpa"], max(floor, s["cold_start_vs_kpa"])) for s in scores
                     if s["policy"] == policy and "fleet_budget" not in s["settings"])
        if not pts:
            continue
        xs, ys = zip(*pts)
        filled = policy in pooled
        ax.plot(xs, ys, marker=marker, ls="-" if len(xs) > 1 else "", mfc=None if filled else "none",
                label=f"{policy} ({'pooled' if filled else 'per model'})")
    for s in scores:
        label = "default" if s["policy"] == "predictive" and s["default"] else (
            f"budget {s['settings']['fleet_budget']}" if "fleet_budget" in s["settings"] else None)
        if label:
            point = (s["pod_seconds_vs_kpa"], max(floor, s["cold_start_vs_kpa"]))
            if "fleet_budget" in s["settings"]:
                ax.plot(*point, marker="P", ls="", color="k", label="predictive within the fleet budget")
            ax.annotate(label, point, textcoords="offset points", xytext=(6, 6), fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("pod-seconds / per-model Knative's")
    ax.set_ylabel("cold-start requests / per-model Knative's")
    ax.set_title(f"{name}: cold starts vs cost, walk-forward")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def reliability_plot(path: Path, title: str, curves: dict[str, list[dict]]) -> None:
    """The calibration curve of P(any) (training/skill.reliability): observed share of minutes
    with a request against the mean prediction, per bin; on the diagonal is calibrated. Point
    size grows with the bin's minutes (log), so a bin of three minutes does not look like one
    of a million."""
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="calibrated")
    for name, curve in curves.items():
        if not curve:
            continue
        x = [b["predicted"] for b in curve]
        y = [b["observed"] for b in curve]
        sizes = [10 + 12 * np.log10(1 + b["minutes"]) for b in curve]
        ax.plot(x, y, lw=0.8, label=name)
        ax.scatter(x, y, s=sizes)
    ax.set_xlabel("predicted P(any request), next minute")
    ax.set_ylabel("observed share of minutes with a request")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(f"{title}: reliability of P(any)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
