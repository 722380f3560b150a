"""`make demo-fleet` (and the second half of `make demo`): a sparse fleet served one Knative Service
per model, against the model pool with predictive placement, side by side on real processes.

The slice (a fixed rule, not picked by its outcome): the 20 services of the shared per-model
Alibaba fleet (`alibaba_sd_lora_2024_fleet_train_1s.csv`, real per-request seconds) with the most
requests over the whole file, replayed over the 2-hour window (starting a whole number of hours after the
first week of the file) with the most model wake-ups (a request after 5 or more idle minutes) summed over them:
the moments a scale-to-zero fleet cold-starts. Each fleet model is served by one of the example
models (wine / diabetes ONNX, alternately, copied under the names m00..m19 into a temporary model
repository), and every request is a real V2 inference call to that model's host.

Arms, all fed the same requests at the same instants:
- `kpa`: one Knative Service per model, Knative's KPA alone (the Serving stand-in's, 60 s window);
- `keepalive`: one Service per model with a 5-minute scale-to-zero-pod-retention-period (the
  keep-alive arm: the point between 2 and 10 minutes of the retention-period sweep);
- `pool`: the pool Service (the multi-model server, MODEL_REPOSITORY) plus a dedicated Service
  per model at zero, each model reached at its own host through a DomainMapping on the API double;
  the real scale function (under func-python, real Redis) places the models, pre-loads them and
  sets the pool's min-scale from their summed forecast, from one forecast event per minute.
  Those events are computed here with the published forecaster (models/forecaster, the forecast
  function's artifact) from the same per-minute counts, origin by origin (a forecast for minute m
  uses minutes before m only), and sent to the scale function as the broker would deliver them;
  `make demo` runs the forecast function, Prometheus and the broker themselves.

Time is compressed: a trace minute lasts DEMO_MINUTE_SECONDS (2) real seconds (30x), so the two
hours take 4 minutes. Windows, keep-alives, the cool-down and the placement hold are in trace
time; a cold start is a real process start (about a second, i.e. ~30 trace seconds), so, as in
`make demo`, a cold start weighs more here than on a cluster (seconds of a 60 s window there).

Reports per arm: requests, cold-start requests (a request that waited for a replica to start),
model loads in the pool and the requests that waited for one (with their wait), replica-minutes
(in trace minutes), p99 latency (real ms); the ratios to `kpa`; reports/demo_fleet.png and
reports/demo_fleet.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import requests
from cloudevents.core.bindings.http import to_binary_event
from cloudevents.core.v1.event import CloudEvent
from prometheus_client.parser import text_string_to_metric_families

from localmode.kube_api_double import KubeApiDouble, scale_function_rules
from localmode.processes import start_function, start_redis, stop
from localmode.serving_standin import ServiceRuntime, ServingStandIn
from training.fleet_trace import load_fleet

ROOT = Path(__file__).resolve().parents[1]
FLEET = ROOT.parent / "shared" / "traces" / "alibaba_sd_lora_2024_fleet_train_1s.csv"
NS = "models"
WEEK = 10080
OPT_IN = {"predictive-scaling.io/enabled": "true"}
KEEPALIVE = "300s"
ARMS = ("kpa", "keepalive", "pool")


def pick_slice(counts: np.ndarray, n_models: int, minutes: int) -> tuple[np.ndarray, int]:
    """The `n_models` services with the most requests, and the window start (minute index, a whole
    number of hours after the first week) with the most wake-ups among them; first best wins."""
    chosen = np.sort(np.argsort(-counts.sum(axis=1), kind="stable")[:n_models])
    busy = counts[chosen] > 0
    idle_before = np.zeros_like(busy)
    for lag in range(1, 6):
        idle_before |= np.roll(busy, lag, axis=1)
    wake = (busy & ~idle_before).sum(axis=0)
    best, best_start = -1, WEEK
    for start in range(WEEK, counts.shape[1] - minutes + 1, 60):
        score = int(wake[start:start + minutes].sum())
        if score > best:
            best, best_start = score, start
    return chosen, best_start


def build_repository(out: Path, names: list[str]) -> dict[str, list[float]]:
    """m00..: copies of the example ONNX models under their own names, with their manifest
    entries (sha256 and the server block) renamed. Returns each model's example row."""
    manifest = json.loads((ROOT / "models" / "manifest.json").read_text())
    sources = {a["name"]: a for a in manifest["artifacts"] if a["format"] == "onnx"}
    out.mkdir(parents=True, exist_ok=True)
    artifacts, rows = [], {}
    for i, name in enumerate(names):
        source = sources["wine" if i % 2 == 0 else "diabetes"]
        shutil.copyfile(ROOT / "models" / source["path"], out / f"{name}.onnx")
        artifacts.append({**source, "name": name, "path": f"{name}.onnx"})
        rows[name] = source["example"][0]
    (out / "manifest.json").write_text(json.dumps({"artifacts": artifacts, "refused": []}, indent=1))
    return rows


def forecasts(counts: np.ndarray, start: int, minutes: int, start_minute: int) -> list[dict]:
    """Each model's forecast from each window minute's start, with the published forecaster."""
    sys.path.insert(0, str(ROOT / "functions" / "forecast"))
    from forecast.model_store import ModelStore

    store = ModelStore(str(ROOT / "models" / "forecaster"))
    model = store.refresh()
    if model is None:
        raise SystemExit(f"no forecaster: {store.problem} (run `make models`)")
    origins = np.arange(start, start + minutes)
    per_model = [model.estimator.predict_origins(series, origins, start_minute) for series in counts]
    return [{"version": model.version, "rows": [(f.point[k], f.upper[k], f.p_any[k]) for f in per_model]}
            for k in range(minutes)]


def forecast_event(tick_s: int, names: list[str], rows, version: str, observed: np.ndarray | None = None) -> CloudEvent:
    """The forecast function's reply: each model's forecast and, as it sends them, its requests in
    the last observed minutes (`observed[i]`: model i's counts in the minutes before the tick),
    which the pool plan keeps as its minute history (the keep-alive's clock, the warmth choice)."""
    tick = datetime.fromtimestamp(tick_s, timezone.utc)
    services = []
    for i, (name, (point, upper, p_any)) in enumerate(zip(names, rows)):
        entry = {"service": f"{NS}/{name}", "status": "ok", "minutes": [
            {"start": datetime.fromtimestamp(tick_s + 60 * h, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
             "point_rps": float(point[h]) / 60, "upper_rps": float(upper[h]) / 60, "p_any": float(p_any[h])}
            for h in range(len(point))]}
        if observed is not None and observed.shape[1]:
            first = datetime.fromtimestamp(tick_s - 60 * observed.shape[1], timezone.utc)
            entry["observed"] = {"start": first.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                 "requests": [float(c) for c in observed[i]]}
        services.append(entry)
    return CloudEvent(attributes={"type": "io.predictive-scaling.forecast.v1", "source": "/predictive-scaling/forecast",
                                  "id": f"demo-fleet-{tick_s}", "time": tick, "datacontenttype": "application/json"},
                      data={"tick": tick.strftime("%Y-%m-%dT%H:%M:%SZ"), "model": {"version": version},
                            "services": services})


class Fleet:
    """The three arms on one API double and one Serving stand-in."""

    def __init__(self, base: Path, names: list[str], repository: Path, minute_s: float):
        self.names = names
        self.minute_s = minute_s
        self.redis = start_redis(base / "redis")
        self.double = KubeApiDouble(scale_function_rules(ROOT, placement=True), version="1.21", mapping_reconcile_s=0.2)
        self.standin = ServingStandIn(mappings=self.double.mapping_target)
        self.runtimes: dict[str, list[ServiceRuntime]] = defaultdict(list)
        self.scale_url = ""
        self._scale = None

        def runtime(arm: str, service: str, **kwargs) -> None:
            revision = f"{service}-00001"
            r = ServiceRuntime(NS, service, annotations=lambda: self.double.annotations("revisions", NS, revision),
                               minute_s=minute_s, log_dir=base,
                               on_ready=lambda n: self.double.set_actual_replicas(NS, revision, n), **kwargs)
            self.standin.add(r)
            self.runtimes[arm].append(r)

        for name in names:
            model = repository / f"{name}.onnx"
            self.double.add_service(NS, f"kpa-{name}", {"arm": "kpa"})
            runtime("kpa", f"kpa-{name}", model=model)
            self.double.add_service(NS, f"ka-{name}", {"arm": "keepalive"},
                                    template_annotations={"autoscaling.knative.dev/scale-to-zero-pod-retention-period": KEEPALIVE})
            runtime("keepalive", f"ka-{name}", model=model)
            self.double.add_service(NS, f"ded-{name}", OPT_IN)
            runtime("pool", f"ded-{name}", model=model)
        self.double.add_service(NS, "infer-pool", {**OPT_IN, "predictive-scaling.io/pool": "true"})
        self.double.touch("serving.knative.dev", "services", NS, "infer-pool", {"predictive-scaling.io/pod-capacity": "10"})
        runtime("pool", "infer-pool", model=None, repository=repository)
        for name in names:
            self.double.add_domain_mapping(NS, f"{name}.{NS}.example.com", "infer-pool",
                                           labels={"predictive-scaling.io/model": name},
                                           annotations={"predictive-scaling.io/dedicated-service": f"ded-{name}"})
        self.scale_url, self._scale = start_function(ROOT / "functions" / "scale", {
            "REDIS_URL": self.redis.url, "KUBERNETES_API_URL": self.double.url, "MAX_FORECAST_AGE_SECONDS": "0",
            "WARMUP_GATEWAY": self.standin.url, "PRELOAD_GATEWAY": self.standin.url, "WARMUP_PATH": "/v2/health/ready", "LOG_LEVEL": "WARNING",
            # the pool's warmth chosen every trace hour from what the plan has seen of the window
            # (on a cluster: once a day, from a week of history)
            "POOL_WARMTH_EVERY_MINUTES": "60", "POOL_HISTORY_MINUTES": "120",
        }, base / "scale.log")

    def host(self, arm: str, name: str) -> str:
        return {"kpa": f"kpa-{name}", "keepalive": f"ka-{name}", "pool": name}[arm] + f".{NS}.example.com"

    def ready(self, arm: str) -> int:
        return sum(sum(x.ready_at is not None for x in r.replicas) for r in self.runtimes[arm])

    def close(self) -> None:
        for closer in (lambda: self._scale is not None and stop(self._scale), self.standin.close, self.double.close,
                       self.redis.stop):
            try:
                closer()
            except Exception:  # noqa: BLE001 - closing must reach every process
                pass


def replay(fleet: Fleet, names: list[str], seconds: np.ndarray, rows: dict, events: list[CloudEvent], t0: float,
           progress) -> tuple[list[dict], list[dict], list[tuple]]:
    """Send every request (all arms, same instants) and one forecast event per minute."""
    scale = fleet.minute_s / 60.0
    schedule = []
    rng = np.random.default_rng(0)
    for i, name in enumerate(names):
        for s in np.flatnonzero(seconds[i]):
            for _ in range(int(seconds[i, s])):
                schedule.append((t0 + (s + rng.random()) * scale, name))
    schedule.sort()
    sent: list[dict] = []
    decisions: list[dict] = []
    samples: list[tuple] = []
    stop_sampling = threading.Event()

    def sample() -> None:
        while not stop_sampling.wait(0.25):
            samples.append((time.time(), *(fleet.ready(a) for a in ARMS)))

    def send(arm: str, name: str, at: float) -> None:
        body = {"inputs": [{"name": "input-0", "shape": [1, len(rows[name])], "datatype": "FP64", "data": rows[name]}]}
        began = time.monotonic()
        try:
            r = requests.post(f"{fleet.standin.url}/v2/models/{name}/infer", json=body,
                              headers={"Host": fleet.host(arm, name)}, timeout=90)
            status, waited = r.status_code, float(r.headers.get("X-Local-Cold-Start-Ms", "0")) / 1000
        except requests.RequestException as exc:
            status, waited = type(exc).__name__, 0.0
        sent.append({"arm": arm, "model": name, "at": at - t0, "status": status, "waited_s": waited,
                     "latency_s": time.monotonic() - began})

    def ticks() -> None:
        session = requests.Session()
        for k, event in enumerate(events):
            delay = t0 + k * fleet.minute_s - time.time()
            if delay > 0 and stop_sampling.wait(delay):
                return
            message = to_binary_event(event)
            try:
                r = session.post(fleet.scale_url, data=message.body, headers=message.headers, timeout=30)
                data = r.json() if r.status_code == 200 else {"error": r.status_code}
            except (requests.RequestException, ValueError) as exc:
                data = {"error": type(exc).__name__}
            decisions.append({"minute": k, **data})
            progress(k, len(events))

    threading.Thread(target=sample, daemon=True).start()
    ticker = threading.Thread(target=ticks, daemon=True)
    ticker.start()
    with ThreadPoolExecutor(max_workers=96, thread_name_prefix="replay") as pool:
        for at, name in schedule:
            delay = at - time.time()
            if delay > 0:
                time.sleep(delay)
            for arm in ARMS:
                pool.submit(send, arm, name, at)
    ticker.join()
    stop_sampling.set()
    return sent, decisions, samples


def pool_loads(texts: list[str]) -> dict:
    """Model loads and the requests that waited for one, from the pool replicas' metrics."""
    loads = waits = 0.0
    wait_sum = 0.0
    buckets: dict[float, float] = defaultdict(float)
    for text in texts:
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == "infer_pool_model_loads_total" and s.labels.get("outcome") == "loaded":
                    loads += s.value
                elif s.name == "infer_pool_model_load_wait_seconds_count":
                    waits += s.value
                elif s.name == "infer_pool_model_load_wait_seconds_sum":
                    wait_sum += s.value
                elif s.name == "infer_pool_model_load_wait_seconds_bucket":
                    buckets[float(s.labels["le"])] += s.value
    p99 = next((le for le in sorted(buckets) if waits and buckets[le] >= 0.99 * waits), None)
    return {"model_loads": int(loads), "load_waits": int(waits),
            "load_wait_mean_ms": 1000 * wait_sum / waits if waits else 0.0,
            "load_wait_p99_ms_at_most": None if p99 is None else 1000 * p99}


def summarize(fleet: Fleet, sent: list[dict], decisions: list[dict]) -> list[dict]:
    rows = []
    for arm in ARMS:
        mine = [s for s in sent if s["arm"] == arm]
        latency = np.array([s["latency_s"] for s in mine]) if mine else np.zeros(1)
        row = {"arm": arm, "requests": len(mine), "errors": sum(s["status"] != 200 for s in mine),
               "error_statuses": dict(Counter(str(s["status"]) for s in mine if s["status"] != 200)),
               "cold_requests": sum(s["waited_s"] > 0 for s in mine),
               "cold_starts": sum(x.started_by_request for r in fleet.runtimes[arm] for x in r.replicas + r.retired),
               "replica_minutes": sum(r.replica_seconds() for r in fleet.runtimes[arm]) / fleet.minute_s,
               "p99_latency_ms": float(np.percentile(latency, 99) * 1000)}
        if arm == "pool":
            pool = next(r for r in fleet.runtimes[arm] if r.name == "infer-pool")
            row.update(pool_loads(pool.scrape_all()))
            placement = [p for d in decisions for p in d.get("placement", []) if "model" in p]
            row["moves"] = sum(1 for p in placement if (p.get("move") or {}).get("applied"))
            row["preloads"] = sum(1 for p in placement if (p.get("preload") or {}).get("outcome") == "loaded")
            last = next((d for d in reversed(decisions) if "placement" in d), {})
            row["dedicated_at_end"] = sorted(p["model"] for p in last.get("placement", []) if p.get("tier") == "dedicated")
            row["tick_errors"] = sum(1 for d in decisions if "error" in d)
        rows.append(row)
    return rows


def print_report(rows: list[dict]) -> None:
    kpa = rows[0]
    print("\n| arm | requests | errors | cold-start requests | cold starts | model loads (pool) | requests that waited "
          "for a model load, mean wait | replica-minutes | p99 latency ms | cold vs kpa | replica-minutes vs kpa |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = lambda a, b: f"{a / b:.2f}x" if b else "n/a"  # noqa: E731
        loads = f"{r['model_loads']}" if "model_loads" in r else ""
        waits = f"{r['load_waits']}, {r['load_wait_mean_ms']:.0f} ms" if "load_waits" in r else ""
        print(f"| {r['arm']} | {r['requests']} | {r['errors']} | {r['cold_requests']} | {r['cold_starts']} | {loads} | "
              f"{waits} | {r['replica_minutes']:.0f} | {r['p99_latency_ms']:.0f} | "
              f"{ratio(r['cold_requests'], kpa['cold_requests'])} | {ratio(r['replica_minutes'], kpa['replica_minutes'])} |")
    errors = {r["arm"]: r["error_statuses"] for r in rows if r["error_statuses"]}
    if errors:
        print(f"\nnon-200 answers by arm: {errors}")
    pool = rows[-1]
    print(f"\npool: {pool['moves']} moves, {pool['preloads']} pre-loads, dedicated at the end: "
          f"{pool['dedicated_at_end'] or 'none'}; scale-function ticks failed: {pool['tick_errors']}; "
          f"p99 wait of a model load <= {pool['load_wait_p99_ms_at_most']} ms (histogram bucket)")
    cold = pool["cold_requests"] / kpa["cold_requests"] if kpa["cold_requests"] else float("nan")
    spend = pool["replica_minutes"] / kpa["replica_minutes"] if kpa["replica_minutes"] else float("nan")
    verdict = "met" if cold <= 0.1 and spend <= 1.0 else "MISSED"
    print(f"target: cold-start requests <= 0.1x per-model Knative's at <= 1.0x its replica-minutes: "
          f"{verdict} ({cold:.2f}x at {spend:.2f}x)")


def plot(sent: list[dict], samples: list[tuple], counts: np.ndarray, t0: float, minute_s: float, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(12, 10), sharex=True)
    axes[0].bar(np.arange(counts.shape[1]), counts.sum(axis=0), width=1.0, color="#bbb")
    axes[0].set_ylabel("requests / minute\n(20 models)")
    axes[0].set_title("Alibaba per-model fleet slice: per-model Knative vs the pool with predictive placement")
    colors = {"kpa": "tab:red", "keepalive": "tab:purple", "pool": "tab:green"}
    for arm in ARMS:
        cold = sorted(s["at"] / minute_s for s in sent if s["arm"] == arm and s["waited_s"] > 0)
        axes[1].step([0, *cold], np.arange(len(cold) + 1), where="post", color=colors[arm], label=arm)
    axes[1].set_ylabel("cold-start requests\n(cumulative)")
    axes[1].legend(loc="upper left")
    if samples:
        times = [(t - t0) / minute_s for t, *_ in samples]
        for i, arm in enumerate(ARMS):
            axes[2].step(times, [s[1 + i] for s in samples], where="post", color=colors[arm], label=arm)
    axes[2].set_ylabel("ready replicas")
    axes[2].set_xlabel("trace minute of the window")
    axes[2].legend(loc="upper left")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--minutes", type=int, default=120, help="trace minutes replayed (default 120)")
    parser.add_argument("--minute-seconds", type=float, default=2.0, help="real seconds per trace minute (default 2)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "demo_fleet.png")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    trace = load_fleet(FLEET)
    minute_counts = trace.minute_counts()
    chosen, start = pick_slice(minute_counts, args.models, args.minutes)
    names = [f"m{i:02d}" for i in range(len(chosen))]
    window = minute_counts[chosen, start:start + args.minutes]
    first_day, last_day = start * 60 // 86400, ((start + args.minutes) * 60 - 1) // 86400
    days = np.concatenate([trace.day_arrivals(d)[chosen] for d in range(first_day, last_day + 1)], axis=1)
    offset = start * 60 - first_day * 86400
    seconds = days[:, offset:offset + args.minutes * 60]
    began = datetime.fromtimestamp(trace.start + start * 60, timezone.utc)
    print(f"demo-fleet: {len(chosen)} busiest services of {FLEET.name} ({', '.join(trace.services[i] for i in chosen[:4])}, ...), "
          f"{args.minutes} trace minutes from {began:%Y-%m-%d %H:%M} UTC (the window with the most wake-ups, "
          f"scanned hourly after the first week), {int(window.sum())} requests per arm; a trace minute lasts {args.minute_seconds:g} s "
          f"(about {args.minutes * args.minute_seconds / 60:.0f} min)", flush=True)
    predicted = forecasts(minute_counts[chosen, :start + args.minutes], start, args.minutes, trace.start_minute)
    events = [forecast_event((trace.start_minute + start + k) * 60, names, p["rows"], p["version"],
                             minute_counts[chosen, max(0, start + k - 5):start + k])
              for k, p in enumerate(predicted)]
    with tempfile.TemporaryDirectory(prefix="predictive-demo-fleet-") as tmp:
        base = Path(tmp)
        rows_of = build_repository(base / "repository", names)
        fleet = None
        try:
            setup = time.time()
            fleet = Fleet(base, names, base / "repository", args.minute_seconds)
            print(f"set-up done in {time.time() - setup:.0f} s: {3 * len(names) + 1} Services at zero "
                  f"(per-model KPA, per-model keep-alive {KEEPALIVE}, the pool + {len(names)} dedicated), "
                  f"{len(names)} DomainMappings, the scale function", flush=True)

            def progress(minute: int, total: int) -> None:
                if minute % 10 == 0:
                    print(f"  minute {minute:4d}/{total}: ready replicas "
                          + ", ".join(f"{a} {fleet.ready(a)}" for a in ARMS), flush=True)

            t0 = time.time() + 2.0
            sent, decisions, samples = replay(fleet, names, seconds, rows_of, events, t0, progress)
            rows = summarize(fleet, sent, decisions)
            print_report(rows)
            plot(sent, samples, window, t0, args.minute_seconds, args.out)
            report = {"slice": {"file": FLEET.name, "services": [trace.services[i] for i in chosen],
                                "start": began.isoformat(), "minutes": args.minutes,
                                "minute_seconds": args.minute_seconds}, "arms": rows}
            args.out.with_suffix(".json").write_text(json.dumps(report, indent=1, default=str))
            print(f"\nplot: {args.out}; numbers: {args.out.with_suffix('.json')}")
        except KeyboardInterrupt:
            print("\ninterrupted: every process the demo started has been stopped", file=sys.stderr)
            sys.exit(130)
        finally:
            if fleet is not None:
                fleet.close()


if __name__ == "__main__":
    main()
