"""`make demo`: the predictive loop against Knative's KPA alone, on one machine, in minutes.

Two models (wine and diabetes, both served from their ONNX files) are each deployed twice behind the Serving stand-in:
`<model>` opted in to predictive scaling and `<model>-kpa` not (the control arm: KPA only). Both
arms receive the same replayed requests: wine replays the Alibaba Stable-Diffusion trace (77%
idle minutes), diabetes a 5% thinning of the NASA web trace (a daily cycle with quiet nights);
a week of each trace before the replayed window is back-filled into Prometheus first. Every
request is a real V2 inference call; every cold start is a real infer process start. A minute
lasts DEMO_MINUTE_SECONDS (2) real seconds, so 2 hours of trace take 4 minutes.

Ends with a table per service (requests, cold starts, added latency, replica-minutes, both
arms and their ratio) and reports/demo.png (traffic, forecast, warm replicas over time).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from localmode.loop import LocalLoop, ServicePlan
from training.traces import load_trace

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "traces"
WEEK = 10080


def pick_window(counts: np.ndarray, minutes: int) -> int:
    """Start of the live window (after a week of history) with the most idle-to-busy changes:
    the moments a scale-to-zero service cold-starts. Scanned hourly, first best wins."""
    busy = np.nan_to_num(counts) > 0
    wake = busy[3:] & ~busy[2:-1] & ~busy[1:-2] & ~busy[:-3]
    wake = np.concatenate(([False] * 3, wake))
    best, best_start = -1, WEEK
    for start in range(WEEK, len(counts) - minutes, 60):
        if np.isnan(counts[start - WEEK:start + minutes]).mean() > 0.01:
            continue
        score = int(wake[start:start + minutes].sum())
        if score > best:
            best, best_start = score, start
    return best_start


def plans(minutes: int) -> list[ServicePlan]:
    manifest = json.loads((ROOT / "models" / "manifest.json").read_text())
    examples = {a["name"]: a["example"][0] for a in manifest["artifacts"]}
    rng = np.random.default_rng(7)
    alibaba = load_trace(SHARED / "alibaba_sd_lora_2024_train.csv").minutes
    nasa = load_trace(SHARED / "nasa_http_1995.csv").minutes
    nasa = np.where(np.isnan(nasa), np.nan, rng.binomial(np.nan_to_num(nasa).astype(int), 0.05))
    out = []
    for model, artifact, series in (("wine", "wine.onnx", alibaba), ("diabetes", "diabetes.onnx", nasa)):
        start = pick_window(series, minutes)
        counts = np.nan_to_num(series[start - WEEK:start + minutes])
        row = examples[model]
        payload = {"model": model, "body": {"inputs": [
            {"name": "input-0", "shape": [1, len(row)], "datatype": "FP64", "data": row}]}}
        for arm, opted in ((model, True), (f"{model}-kpa", False)):
            out.append(ServicePlan(arm, ROOT / "models" / artifact, counts, WEEK, payload, opted_in=opted,
                                   traffic_key=model))
    return out


def summarize(loop: LocalLoop, minute_s: float) -> list[dict]:
    rows = []
    for plan in loop.plans:
        runtime = next(r for r in loop.standin.services.values() if r.name == plan.name)
        sent = [s for s in loop.sent if s.service == plan.key]
        waited = np.array([s.waited_s for s in sent]) if sent else np.zeros(1)
        latency = np.array([s.latency_s for s in sent]) if sent else np.zeros(1)
        rows.append({
            "service": plan.name, "requests": len(sent), "errors": sum(s.status != 200 for s in sent),
            "cold_requests": int((waited > 0).sum()),
            "cold_starts": sum(r.started_by_request for r in runtime.replicas + runtime.retired),
            "added_latency_s": float(waited.sum()), "p99_latency_ms": float(np.percentile(latency, 99) * 1000),
            "replica_minutes": runtime.replica_seconds() / minute_s,
        })
    return rows


def print_report(rows: list[dict]) -> None:
    print("\n| service | arm | requests | requests that waited for a cold start | cold starts | "
          "added latency s (sum) | p99 latency ms | replica-minutes |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        arm = "KPA only" if r["service"].endswith("-kpa") else "predictive + KPA"
        print(f"| {r['service'].removesuffix('-kpa')} | {arm} | {r['requests']} | {r['cold_requests']} | "
              f"{r['cold_starts']} | {r['added_latency_s']:.1f} | {r['p99_latency_ms']:.0f} | {r['replica_minutes']:.0f} |")
    print("\n| service | cold-start requests, predictive / KPA | added latency, predictive / KPA | replica-minutes, predictive / KPA |")
    print("|---|---|---|---|")
    by_name = {r["service"]: r for r in rows}
    for name, r in by_name.items():
        if name.endswith("-kpa"):
            continue
        k = by_name[f"{name}-kpa"]
        ratio = lambda a, b: f"{a / b:.2f}x" if b else ("0 / 0" if not a else "n/a")  # noqa: E731
        print(f"| {name} | {ratio(r['cold_requests'], k['cold_requests'])} | "
              f"{ratio(r['added_latency_s'], k['added_latency_s'])} | {ratio(r['replica_minutes'], k['replica_minutes'])} |")


def plot(loop: LocalLoop, minute_s: float, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = [p for p in loop.plans if p.opted_in]
    fig, axes = plt.subplots(2 * len(models), 1, figsize=(12, 4.5 * len(models)), sharex=True)
    t0 = loop.start_minute * minute_s
    for i, plan in enumerate(models):
        live = plan.counts[plan.history:]
        top, bottom = axes[2 * i], axes[2 * i + 1]
        top.bar(np.arange(len(live)), live, width=1.0, color="#bbb", label="requests per minute (replayed)")
        forecasts = loop.forecasts(plan.key)
        xs, upper, p_any = [], [], []
        for f in forecasts:
            if f.get("status") != "ok":
                continue
            first = f["minutes"][0]
            when = time.mktime(time.strptime(first["start"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
            xs.append((when - t0) / minute_s)
            upper.append(first["upper_rps"] * minute_s)
            p_any.append(first["p_any"])
        top.step(xs, upper, where="post", color="tab:blue", label="forecast, upper quantile (current minute)")
        twin = top.twinx()
        twin.plot(xs, p_any, color="tab:orange", lw=0.8, label="forecast P(any request)")
        twin.set_ylim(0, 1.05)
        twin.set_ylabel("P(any)")
        top.set_ylabel("requests / minute")
        top.set_title(f"{plan.name}: traffic and forecast")
        top.legend(loc="upper left", fontsize=8)
        for arm, color in ((plan.name, "tab:green"), (f"{plan.name}-kpa", "tab:red")):
            runtime = next(r for r in loop.standin.services.values() if r.name == arm)
            times = [(t - t0) / minute_s for t, *_ in runtime.stats.timeline]
            ready = [r for _, r, _, _ in runtime.stats.timeline]
            bottom.step(times, ready, where="post", color=color, label=f"ready replicas: {arm}")
            if arm == plan.name:
                bottom.step(times, [m for *_, m in runtime.stats.timeline], where="post", color="k", ls="--",
                            lw=0.8, label="min-scale set by the scale function")
        bottom.set_ylabel("replicas")
        bottom.legend(loc="upper left", fontsize=8)
    axes[-1].set_xlim(0, max(len(p.counts) - p.history for p in models))
    axes[-1].set_xlabel("demo minute")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=int, default=120, help="trace minutes replayed (default 120)")
    parser.add_argument("--minute-seconds", type=int, default=2, help="real seconds per demo minute (default 2)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "demo.png")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    print(f"demo: {args.minutes} trace minutes at {args.minute_seconds} s each "
          f"(about {args.minutes * args.minute_seconds / 60:.0f} min), predictive vs KPA-only, side by side", flush=True)
    setup = time.time()
    with tempfile.TemporaryDirectory(prefix="predictive-demo-") as tmp:
        try:
            with LocalLoop(Path(tmp), plans(args.minutes), args.minute_seconds, ROOT / "models" / "forecaster") as loop:
                print(f"set-up done in {time.time() - setup:.0f} s: Redis, Prometheus (a week back-filled), "
                      f"forecast / scale / dead-letter functions, broker, 4 services at zero", flush=True)
                loop.ping.start()

                def progress(minute: int, total: int) -> None:
                    if minute % 10 == 0:
                        done = {p.key: sum(1 for s in loop.sent if s.service == p.key) for p in loop.plans}
                        warm = {r.name: sum(x.ready_at is not None for x in r.replicas) for r in loop.standin.services.values()}
                        print(f"  minute {minute:4d}/{total}: requests sent {sum(done.values()):5d}, "
                              f"warm replicas {warm}", flush=True)

                loop.replay(progress)
                loop.ping.stop()
                loop.broker.wait_idle(10)
                rows = summarize(loop, args.minute_seconds)
                print_report(rows)
                plot(loop, args.minute_seconds, args.out)
                print(f"\nplot: {args.out}")
                letters = loop.dead_letters()
                print(f"dead letters: {len(letters)}; forecast ticks: {len(loop.ping.sent)}")
        except KeyboardInterrupt:
            print("\ninterrupted: every process the demo started has been stopped", file=sys.stderr)
            sys.exit(130)


if __name__ == "__main__":
    main()
