"""`make demo`: the predictive loop against Knative alone and Knative's own keep-alive, on one
machine, in minutes.

Two models (wine and diabetes, both served from their ONNX files) are each deployed three times
behind the Serving stand-in: `<model>` opted in to predictive scaling, `<model>-kpa` not (KPA
only), and `<model>-keepalive` not either but with Knative's
`autoscaling.knative.dev/scale-to-zero-pod-retention-period` set so that it spends about what the
predictive arm spends. The rule (training/keepalive_match.py): on the back-filled history only,
simulate the predictive policy (with the forecaster the loop runs) and keep-alives of k minutes
on the same arrivals, and take the k whose pod-seconds come closest to the predictive policy's.
Every arm receives the same replayed requests: wine replays the Alibaba Stable-Diffusion trace
(77% idle minutes), diabetes a 5% thinning of the NASA web trace (a daily cycle with quiet
nights); a week of each trace before the replayed window is back-filled into Prometheus first.
Every request is a real V2 inference call; every cold start is a real infer process start. A
minute lasts DEMO_MINUTE_SECONDS (2) real seconds, so 2 hours of trace take 4 minutes.

Ends with a table per service (requests, cold starts, added latency, replica-minutes, every arm,
and the ratios), a verdict where prediction does not beat the keep-alive, and reports/demo.png
(traffic, forecast, warm replicas of every arm over time). Progress goes to stderr.
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
from forecast.model_store import ModelStore
from scale.min_scale_policy import PolicySettings
from tqdm import tqdm

from localmode.loop import LocalLoop, ServicePlan
from localmode.serving_standin import RETENTION
from training.keepalive_match import Match, matched_keepalive
from training.traces import load_trace

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "traces"
WEEK = 10080
POD_CAPACITY_RPS = 300  # the demo Services' predictive-scaling.io/pod-capacity (localmode.loop.ServicePlan)
RULE_COLD_START_S = 5.0
ARMS = {"": "predictive + KPA", "-kpa": "KPA only", "-keepalive": "KPA + keep-alive"}


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


def arm_of(service: str) -> tuple[str, str]:
    """(model, arm suffix) of a demo Service name."""
    for suffix in ("-kpa", "-keepalive"):
        if service.endswith(suffix):
            return service.removesuffix(suffix), suffix
    return service, ""


def plans(minutes: int, forecaster_root: Path) -> tuple[list[ServicePlan], dict[str, Match]]:
    """The Services of every arm, and each model's keep-alive chosen on its history alone."""
    estimator = ModelStore(str(forecaster_root)).refresh().estimator
    manifest = json.loads((ROOT / "models" / "manifest.json").read_text())
    examples = {a["name"]: a["example"][0] for a in manifest["artifacts"]}
    rng = np.random.default_rng(7)
    alibaba = load_trace(SHARED / "alibaba_sd_lora_2024_train.csv")
    nasa = load_trace(SHARED / "nasa_http_1995.csv")
    thinned = np.where(np.isnan(nasa.minutes), np.nan, rng.binomial(np.nan_to_num(nasa.minutes).astype(int), 0.05))
    out, matches = [], {}
    models = (("wine", "wine.onnx", alibaba.minutes, alibaba.start_minute),
              ("diabetes", "diabetes.onnx", thinned, nasa.start_minute))
    for model, artifact, series, first_minute in tqdm(models, desc="demo set-up: keep-alive rule on each history",
                                                      file=sys.stderr):
        start = pick_window(series, minutes)
        counts = np.nan_to_num(series[start - WEEK:start + minutes])
        matches[model] = matched_keepalive(counts[:WEEK], first_minute + start - WEEK, estimator,
                                           PolicySettings(capacity_rps=POD_CAPACITY_RPS), RULE_COLD_START_S)
        row = examples[model]
        payload = {"model": model, "body": {"inputs": [
            {"name": "input-0", "shape": [1, len(row)], "datatype": "FP64", "data": row}]}}
        for suffix in ARMS:
            out.append(ServicePlan(model + suffix, ROOT / "models" / artifact, counts, WEEK, payload,
                                   opted_in=suffix == "", traffic_key=model))
    return out, matches


def set_retention(loop: LocalLoop, matches: dict[str, Match]) -> None:
    """Knative's keep-alive on the keep-alive arm's Revision, where Knative reads it."""
    for model, match in matches.items():
        loop.double.touch("serving.knative.dev", "revisions", "models", f"{model}-keepalive-00001",
                          {RETENTION: f"{match.minutes * 60}s"})


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


def print_report(rows: list[dict], matches: dict[str, Match]) -> None:
    print("\nkeep-alive arm: scale-to-zero-pod-retention-period chosen on each model's history week (last two "
          "days simulated), the one whose pod-seconds come closest to the predictive policy's:")
    for model, m in matches.items():
        print(f"- {model}: {m.minutes} min (history: keep-alive {m.keepalive_pod_seconds:.0f} pod-s and "
              f"{m.keepalive_cold_starts} cold-start requests, predictive {m.predictive_pod_seconds:.0f} pod-s and "
              f"{m.predictive_cold_starts}, of {m.requests} requests)")
    print("\n| service | arm | requests | requests that waited for a cold start | cold starts | "
          "added latency s (sum) | p99 latency ms | replica-minutes |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        model, suffix = arm_of(r["service"])
        arm = ARMS[suffix] + (f" ({matches[model].minutes} min)" if suffix == "-keepalive" else "")
        print(f"| {model} | {arm} | {r['requests']} | {r['cold_requests']} | "
              f"{r['cold_starts']} | {r['added_latency_s']:.1f} | {r['p99_latency_ms']:.0f} | {r['replica_minutes']:.0f} |")
    print("\n| service | cold-start requests, predictive / KPA | replica-minutes, predictive / KPA | "
          "cold-start requests, predictive / keep-alive | replica-minutes, predictive / keep-alive |")
    print("|---|---|---|---|---|")
    by_name = {r["service"]: r for r in rows}
    ratio = lambda a, b: f"{a / b:.2f}x" if b else ("0 / 0" if not a else "n/a")  # noqa: E731
    verdicts = []
    for name, r in by_name.items():
        if arm_of(name)[1]:
            continue
        k, ka = by_name[f"{name}-kpa"], by_name[f"{name}-keepalive"]
        print(f"| {name} | {ratio(r['cold_requests'], k['cold_requests'])} | {ratio(r['replica_minutes'], k['replica_minutes'])} | "
              f"{ratio(r['cold_requests'], ka['cold_requests'])} | {ratio(r['replica_minutes'], ka['replica_minutes'])} |")
        verdicts.append(verdict(name, r, ka))
    print()
    for line in verdicts:
        print(line)


def verdict(name: str, predictive: dict, keepalive: dict) -> str:
    """Prediction beats the keep-alive only with fewer cold-start requests at no more spend
    (within 10%), or the same cold starts for less."""
    p_cold, k_cold = predictive["cold_requests"], keepalive["cold_requests"]
    p_cost, k_cost = predictive["replica_minutes"], keepalive["replica_minutes"]
    if (p_cold < k_cold and p_cost <= 1.1 * k_cost) or (p_cold == k_cold and p_cost < 0.9 * k_cost):
        return (f"{name}: prediction beats the keep-alive here ({p_cold} vs {k_cold} cold-start requests, "
                f"{p_cost:.0f} vs {k_cost:.0f} replica-minutes).")
    return (f"{name}: prediction does NOT beat Knative's keep-alive here ({p_cold} vs {k_cold} cold-start requests, "
            f"{p_cost:.0f} vs {k_cost:.0f} replica-minutes).")


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
        for arm, color in ((plan.name, "tab:green"), (f"{plan.name}-kpa", "tab:red"), (f"{plan.name}-keepalive", "tab:purple")):
            runtime = next(r for r in loop.standin.services.values() if r.name == arm)
            if not runtime.stats.timeline:
                continue
            timeline = runtime.stats.timeline + runtime.stats.timeline[-1:]  # held to the end of the run
            times = [(t - t0) / minute_s for t, *_ in timeline[:-1]] + [float(len(live))]
            ready = [r for _, r, _, _ in timeline]
            bottom.step(times, ready, where="post", color=color, label=f"ready replicas: {arm}")
            if arm == plan.name:
                bottom.step(times, [m for *_, m in timeline], where="post", color="k", ls="--",
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
          f"(about {args.minutes * args.minute_seconds / 60:.0f} min), predictive vs KPA-only vs keep-alive, side by side",
          file=sys.stderr, flush=True)
    setup = time.time()
    forecaster = ROOT / "models" / "forecaster"
    with tempfile.TemporaryDirectory(prefix="predictive-demo-") as tmp:
        try:
            services, matches = plans(args.minutes, forecaster)
            with LocalLoop(Path(tmp), services, args.minute_seconds, forecaster) as loop:
                set_retention(loop, matches)
                print(f"set-up done in {time.time() - setup:.0f} s: Redis, Prometheus (a week back-filled), "
                      f"forecast / scale / dead-letter functions, broker, {len(services)} services at zero",
                      file=sys.stderr, flush=True)
                loop.ping.start()
                bar = tqdm(total=max(len(p.counts) - p.history for p in services), desc="replay", unit="min",
                           file=sys.stderr)

                def progress(minute: int, total: int) -> None:
                    bar.update(minute - bar.n)
                    warm = {r.name: sum(x.ready_at is not None for x in r.replicas) for r in loop.standin.services.values()}
                    bar.set_postfix(sent=len(loop.sent), warm=sum(warm.values()), refresh=False)

                loop.replay(progress)
                bar.update(bar.total - bar.n)
                bar.close()
                loop.ping.stop()
                loop.broker.wait_idle(10)
                rows = summarize(loop, args.minute_seconds)
                print_report(rows, matches)
                plot(loop, args.minute_seconds, args.out)
                print(f"\nplot: {args.out}")
                letters = loop.dead_letters()
                print(f"dead letters: {len(letters)}; forecast ticks: {len(loop.ping.sent)}")
        except KeyboardInterrupt:
            print("\ninterrupted: every process the demo started has been stopped", file=sys.stderr)
            sys.exit(130)


if __name__ == "__main__":
    main()
