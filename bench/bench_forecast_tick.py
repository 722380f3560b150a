"""Forecast function tick time, end to end (ping in -> forecast event out), against a real
Prometheus back-filled with N services of one week each (SIZES, e.g. 1,000 and 10,000).

    make bench-forecast SIZES="1000 10000"   # or: .venv/bin/python bench/bench_forecast_tick.py --sizes 1000 10000
    .venv/bin/python bench/bench_forecast_tick.py --sizes 10000 --keep /tmp/bench-blocks   # back-fill once, reuse it

The function runs under func-python exactly as `func run --builder=host` runs it, with real Redis.
Services are week-long windows of the shared traces (bench_forecaster.fleet). To keep the
back-fill to one sample per service-minute, Prometheus holds the per-minute counts as a recorded
series (what a recording rule over any preset would produce), read with a PROMQL override: the
function reads such a series as stored (an instant query of a range selector, plus the heartbeat's
range query: two queries a tick). Per size: the cold tick (a week read for every service: the
cold fill, then the forecast), the steady ticks, queries per tick, CPU seconds of the function and
of Prometheus (what a loaded machine's wall clock hides), the function's peak RSS (VmHWM: what its
memory limit must allow), Redis bytes per service, and an estimate for
100,000 services from the growth between the two largest sizes (on paper). Targets (10,000
services): cold fill <= 5 min at <= 1 GiB peak, steady tick <= 2 s. Not a test: a table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import redis
import requests
from cloudevents.core.bindings.http import to_binary_event
from cloudevents.core.v1.event import CloudEvent

from bench.bench_forecaster import fleet
from bench.growth import estimate
from localmode.processes import start_prometheus, start_redis, start_function, stop
from localmode.prometheus_backfill import create_blocks
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
END_MINUTE = 28_870_560 + 720
STEADY_TICKS = 5
PROMQL = "sum by (namespace, service) (last_over_time(bench:requests_per_minute{{selector}}[{window}]))"


def backfill(base: Path, counts: np.ndarray, days: int) -> None:
    n, width = counts.shape
    start = END_MINUTE + STEADY_TICKS + 2 - width
    om = base / "history.om"
    with om.open("w") as out:
        out.write("# TYPE bench:requests_per_minute unknown\n")
        stamps = ((start + np.arange(width) + 1) * 60).astype(str)  # value at t: the minute ending at t
        for i in range(n):
            prefix = f'bench:requests_per_minute{{namespace="bench",service="svc-{i:05d}"}} '
            values = np.char.mod("%.0f", np.nan_to_num(counts[i]))
            out.write("".join(prefix + v + " " + t + "\n" for v, t in zip(values, stamps)))
        out.write("# TYPE up unknown\n")
        for t in range(start * 60, (start + width + 1) * 60, 30):
            out.write(f'up{{job="bench",instance="a"}} 1 {t}\n')
        out.write("# EOF\n")
    create_blocks(om, base / "data")
    om.unlink()


def ping(minute: int, event_id: str) -> tuple[dict, bytes]:
    event = CloudEvent(attributes={"type": "dev.knative.sources.ping", "source": "/bench", "id": event_id,
                                   "time": datetime.fromtimestamp(minute * 60, timezone.utc)})
    message = to_binary_event(event)
    return message.headers, message.body


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) the process has used so far: under a loaded machine's noise,
    the work itself."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """Resident memory now (VmRSS) or at its peak so far (VmHWM: what a memory limit must allow)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(n: int, days: int, base: Path, keep: Path | None = None) -> dict:
    """One size. `keep`: a directory holding the back-filled blocks of an earlier run of this
    size and history (copied, not re-made), or where this run's are saved."""
    kept = keep / f"{n}-{days}d" if keep else None
    started = time.perf_counter()
    if kept is not None and (kept / "data").is_dir():
        shutil.copytree(kept / "data", base / "data")
    else:
        counts = fleet(n)[:, -days * 1440:] if days < 7 else fleet(n)
        counts = np.concatenate([counts, counts[:, :STEADY_TICKS + 2]], axis=1)
        backfill(base, counts, days)
        if kept is not None:
            shutil.copytree(base / "data", kept / "data")
    backfill_s = time.perf_counter() - started
    (base / "prom").mkdir()
    shutil.move(str(base / "data"), str(base / "prom" / "data"))
    prometheus = start_prometheus(base / "prom")
    store = start_redis(base / "redis")
    env = {"PROMETHEUS_URL": prometheus.url, "REDIS_URL": store.url, "PROMQL": PROMQL, "METRICS_PRESET": "infer", "ACCEPTED_SOURCES": "/bench",
           "HEARTBEAT_SELECTOR": 'job="bench"', "FORECASTER_ROOT": str(ROOT / "models" / "forecaster"), "PROMETHEUS_TIMEOUT_SECONDS": "120",
           "LOG_LEVEL": "WARNING"}
    url, fn = start_function(ROOT / "functions" / "forecast", env, base / "fn.log", timeout=120)
    try:
        headers, body = ping(END_MINUTE, "cold")
        t0, fn_cpu, prom_cpu = time.perf_counter(), cpu_s(fn.pid), cpu_s(prometheus.process.pid)
        r = requests.post(url, data=body, headers=headers, timeout=1800)
        cold = time.perf_counter() - t0
        cold_cpu, cold_prom_cpu = cpu_s(fn.pid) - fn_cpu, cpu_s(prometheus.process.pid) - prom_cpu
        assert r.status_code == 200, r.text[:300]
        cold_queries = r.json().get("queries")
        cold_peak = rss_mib(fn.pid, "VmHWM")
        steady, steady_cpu, steady_prom_cpu = [], [], []
        queries = []
        for k in tqdm(range(STEADY_TICKS), desc=f"{n} services: steady ticks", unit="tick", file=sys.stderr, leave=False):
            headers, body = ping(END_MINUTE + 1 + k, f"steady-{k}")
            t0, fn_cpu, prom_cpu = time.perf_counter(), cpu_s(fn.pid), cpu_s(prometheus.process.pid)
            r = requests.post(url, data=body, headers=headers, timeout=600)
            steady.append(time.perf_counter() - t0)
            steady_cpu.append(cpu_s(fn.pid) - fn_cpu)
            steady_prom_cpu.append(cpu_s(prometheus.process.pid) - prom_cpu)
            assert r.status_code == 200, r.text[:300]
            queries.append(r.json().get("queries"))
        data = r.json()
        ok = sum(1 for s in data["services"] if s["status"] == "ok")
        return {"services": n, "history_days": days, "backfill_s": backfill_s, "cold_s": cold,
                "cold_cpu_s": cold_cpu, "cold_prometheus_cpu_s": cold_prom_cpu,
                "steady_cpu_s": statistics.median(steady_cpu), "steady_prometheus_cpu_s": statistics.median(steady_prom_cpu),
                "cold_queries": cold_queries, "steady_queries": max(queries), "cold_peak_mib": cold_peak,
                "steady_median_s": statistics.median(steady), "steady_max_s": max(steady),
                "forecast_ok": ok, "reply_mib": len(r.content) / 2**20, "fn_rss_mib": rss_mib(fn.pid),
                "fn_peak_mib": rss_mib(fn.pid, "VmHWM"),
                "redis_mib": redis.Redis.from_url(store.url).info("memory")["used_memory"] / 2**20}
    finally:
        stop(fn)
        store.stop()
        prometheus.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--keep", type=Path, default=None,
                        help="directory to keep each size's back-filled blocks in, and reuse them from")
    args = parser.parse_args()
    if not (ROOT / "models" / "forecaster" / "manifest.json").exists():
        sys.exit("run `make models` first (the published forecaster)")
    rows = []
    for n in tqdm(sorted(args.sizes), desc="bench-forecast: sizes", unit="size", file=sys.stderr):
        with tempfile.TemporaryDirectory(prefix=f"bench-tick-{n}-") as tmp:
            rows.append(run(n, args.days, Path(tmp), args.keep))
    print("\n| services | history | back-fill s | cold tick s (queries) | cold CPU s (function / Prometheus) | steady tick s (median / max) | steady CPU s (function / Prometheus, median) | queries per steady tick | forecast ok | reply MiB | function peak RSS MiB (cold / end) | Redis bytes per service | targets (cold <= 300 s at <= 1024 MiB, steady <= 2 s) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        met = r["cold_s"] <= 300 and r["fn_peak_mib"] <= 1024 and r["steady_median_s"] <= 2
        print(f"| {r['services']:,} | {r['history_days']} d | {r['backfill_s']:.0f} | {r['cold_s']:.1f} ({r['cold_queries']}) | "
              f"{r['cold_cpu_s']:.1f} / {r['cold_prometheus_cpu_s']:.1f} | "
              f"{r['steady_median_s']:.2f} / {r['steady_max_s']:.2f} | {r['steady_cpu_s']:.2f} / {r['steady_prometheus_cpu_s']:.2f} | {r['steady_queries']} | {r['forecast_ok']:,} | {r['reply_mib']:.2f} | "
              f"{r['cold_peak_mib']:.0f} / {r['fn_peak_mib']:.0f} | {r['redis_mib'] * 2**20 / r['services']:,.0f} | "
              f"{'met' if met else 'MISSED'} |")
    if len(rows) >= 2:
        print(f"\nOn paper, 100,000 services (from the growth {rows[-2]['services']:,} -> {rows[-1]['services']:,}): "
              f"cold tick {estimate(rows, lambda r: r['cold_s'], digits=0)} s; steady tick {estimate(rows, lambda r: r['steady_median_s'], digits=0)} s; "
              f"peak RSS {estimate(rows, lambda r: r['fn_peak_mib'], digits=0)} MiB; Redis {estimate(rows, lambda r: r['redis_mib'], digits=0)} MiB.")


if __name__ == "__main__":
    main()
