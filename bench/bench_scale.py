"""Scale function decision time for one forecast event covering N services (SIZES, e.g. 1,000 and
10,000, in 10 namespaces), against the Kubernetes API double over HTTP, the function under
func-python with real Redis. The event is in the forecast function's form (each minute stamped with
its start, the data window, the last observed minutes, the rolling skill). Per size, in one run:

- first event: the function's first (its cache is empty: each namespace's Services and Revisions
  are listed in pages, then watched) and every service raised (one patch each, API_WRITERS at once);
- steady events: the same forecast again, three times (nothing to write: no API call expected),
  and one where 10% of the services are lowered (one patch each);
- the first event of a restarted function (empty cache; the cluster already carries the decisions);
- API calls made during each event (watch streams opened by the cache are counted apart), the
  function's peak RSS, Redis bytes per service, and an estimate for 100,000 services from the
  growth between the two largest sizes measured (on paper: t(100k) = t(n) * (100k / n)^b, b the
  measured exponent).

Targets (10,000 services, this 2-core machine with other work stopped): first event <= 10 s,
steady event <= 2 s, API calls per steady event O(1). Not a test: a table, one run, this machine.

    make bench-scale SIZES="1000 10000"     # or: .venv/bin/python bench/bench_scale.py --sizes 1000 10000
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import redis
import requests
from cloudevents.core.bindings.http import to_binary_event
from cloudevents.core.v1.event import CloudEvent

from bench.growth import estimate
from localmode.processes import start_redis, start_function, stop
from localmode.kube_api_double import KubeApiDouble, scale_function_rules
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
TICK0 = 29_000_000
NAMESPACES = 10
STEADY_REPEATS = 3


def event(n: int, tick: int, busy: set[int], event_id: str) -> CloudEvent:
    """The forecast function's event for `n` services, in its form (functions/forecast/forecast/
    tick.py): each minute stamped with its start, the data window, the last observed minutes and
    the rolling skill (good enough: the forecast is used, not the keep-alive fallback)."""
    when = datetime.fromtimestamp(tick * 60, timezone.utc)
    starts = [minute(tick + 1 + h) for h in range(5)]
    window = {"start": minute(tick - 60), "end": minute(tick), "minutes_with_data": 60, "gap_minutes": 0}
    services = []
    for i in range(n):
        rps = 25.0 if i in busy else 0.0
        services.append({
            "service": f"ns-{i % NAMESPACES}/svc-{i:05d}", "status": "ok",
            "minutes": [{"start": at, "point_rps": rps / 2, "upper_rps": rps, "p_any": 0.99 if i in busy else 0.0}
                        for at in starts],
            "data_window": window,
            "observed": {"start": minute(tick - 4), "requests": [rps * 60] * 5},
            "skill": {"brier_skill": 0.6, "mase": 0.5, "minutes": 600}})
    return CloudEvent(attributes={"type": "io.predictive-scaling.forecast.v1", "source": "/bench", "id": event_id,
                                  "time": when, "datacontenttype": "application/json"},
                      data={"tick": when.strftime("%Y-%m-%dT%H:%M:%SZ"), "services": services})


def minute(at: int) -> str:
    return datetime.fromtimestamp(at * 60, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def cpu_s(pid: int) -> float:
    """CPU seconds the process has used (user + system, its threads included): what the event
    cost the function itself, apart from the API double's work and the machine's other load."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(n: int, base: Path, extra: dict[str, str]) -> dict:
    rules = scale_function_rules(ROOT, namespaces=[f"ns-{k}" for k in range(NAMESPACES)])
    double = KubeApiDouble(rules)
    for i in range(n):
        double.add_service(f"ns-{i % NAMESPACES}", f"svc-{i:05d}", {"predictive-scaling.io/enabled": "true"})
    store = start_redis(base / "redis")
    env = {"REDIS_URL": store.url, "KUBERNETES_API_URL": double.url, "MAX_FORECAST_AGE_SECONDS": "0",
           "WARMUP": "false", "COOLDOWN_SECONDS": "0", "LOG_LEVEL": "WARNING",
           "ACCEPTED_SOURCES": "/bench", "MANAGED_NAMESPACES": ",".join(f"ns-{k}" for k in range(NAMESPACES)), **extra}
    url, fn = start_function(ROOT / "functions" / "scale", env, base / "fn.log")
    events = []
    try:
        everyone = set(range(n))
        plan = [("first", everyone)] + [("steady", everyone)] * STEADY_REPEATS + \
               [("10% lowered", everyone - set(range(0, n, 10)))]
        for k, (label, busy) in enumerate(plan):
            message = to_binary_event(event(n, TICK0 + k, busy, f"bench-{k}"))
            double.settle_watches(60)  # the previous event's writes have reached the cache
            calls = len(double.requests)
            cpu, served = cpu_s(fn.pid), time.process_time()
            started = time.perf_counter()
            r = requests.post(url, data=message.body, headers=message.headers, timeout=600)
            wall = time.perf_counter() - started
            cpu, served = cpu_s(fn.pid) - cpu, time.process_time() - served
            assert r.status_code == 200, r.text[:300]
            new = double.requests[calls:]
            data = r.json()
            events.append({"event": label, "wall_s": wall, "cpu_s": cpu, "double_cpu_s": served, "applied": sum(d["applied"] for d in data["decisions"]),
                           "calls": sum(c.verb != "watch" for c in new), "watches": sum(c.verb == "watch" for c in new),
                           "patches": sum(c.method == "PATCH" for c in new)})
        rss = peak_rss_mib(fn.pid)
        redis_bytes = redis.Redis.from_url(store.url).info("memory")["used_memory"]
        # a restarted function (a new pod): its cache is empty, the cluster already carries the decisions
        stop(fn)
        url, fn = start_function(ROOT / "functions" / "scale", env, base / "fn.log")
        message = to_binary_event(event(n, TICK0 + len(plan), everyone - set(range(0, n, 10)), "bench-restart"))
        calls = len(double.requests)
        cpu, served = cpu_s(fn.pid), time.process_time()
        started = time.perf_counter()
        r = requests.post(url, data=message.body, headers=message.headers, timeout=600)
        wall = time.perf_counter() - started
        cpu, served = cpu_s(fn.pid) - cpu, time.process_time() - served
        assert r.status_code == 200, r.text[:300]
        new = double.requests[calls:]
        events.append({"event": "first after a restart", "wall_s": wall, "cpu_s": cpu, "double_cpu_s": served,
                       "applied": sum(d["applied"] for d in r.json()["decisions"]),
                       "calls": sum(c.verb != "watch" for c in new), "watches": sum(c.verb == "watch" for c in new),
                       "patches": sum(c.method == "PATCH" for c in new)})
    finally:
        stop(fn)
        store.stop()
        double.close()
    steady = [e for e in events if e["event"] == "steady"]
    return {"services": n, "events": events, "first": events[0], "restart": events[-1],
            "steady_s": statistics.median(e["wall_s"] for e in steady),
            "steady_calls": max(e["calls"] for e in steady), "lowered": events[-2],
            "rss_mib": rss, "redis_b_per_service": redis_bytes / n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="extra settings for the function, e.g. API_READS=list API_WRITERS=1")
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.set)
    rows = []
    for n in tqdm(sorted(args.sizes), desc="bench-scale: sizes", unit="size", file=sys.stderr):
        with tempfile.TemporaryDirectory(prefix=f"bench-scale-{n}-") as tmp:
            rows.append(run(n, Path(tmp), extra))
    print("\nPer event (API calls: requests made during the event; watch streams opened are counted apart)")
    print("(function CPU s: what the event cost the function's own process; API double CPU s: what answering it cost "
          "the double (Python: its request threads share one interpreter); the rest of the wall time is the round "
          "trips and the machine's other load)")
    print("\n| services | event | wall s | function CPU s | API double CPU s | services patched | API calls | of which PATCH | watches opened |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        for e in r["events"]:
            print(f"| {r['services']:,} | {e['event']} | {e['wall_s']:.2f} | {e['cpu_s']:.2f} | {e['double_cpu_s']:.2f} | {e['applied']:,} | {e['calls']:,} | "
                  f"{e['patches']:,} | {e['watches']} |")
    print("\n| services | first event s (all raised / after a restart) | steady event s (median) | API calls per steady event | 10% lowered s | "
          "function peak RSS MiB | Redis bytes per service | targets (first <= 10 s, steady <= 2 s) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        first_ok = "met" if r["first"]["wall_s"] <= 10 else "MISSED"
        restart_ok = "met" if r["restart"]["wall_s"] <= 10 else "MISSED"
        steady_ok = "met" if r["steady_s"] <= 2 else "MISSED"
        print(f"| {r['services']:,} | {r['first']['wall_s']:.2f} / {r['restart']['wall_s']:.2f} | {r['steady_s']:.2f} | "
              f"{r['steady_calls']} | {r['lowered']['wall_s']:.2f} | {r['rss_mib']:.0f} | {r['redis_b_per_service']:.0f} | "
              f"first {first_ok} / {restart_ok}, steady {steady_ok} |")
    if len(rows) >= 2:
        print(f"\nOn paper, 100,000 services (from the growth {rows[-2]['services']:,} -> {rows[-1]['services']:,}): "
              f"first event {estimate(rows, lambda r: r['first']['wall_s'])} s; "
              f"steady event {estimate(rows, lambda r: r['steady_s'])} s; "
              f"peak RSS {estimate(rows, lambda r: r['rss_mib'])} MiB; "
              f"Redis {estimate(rows, lambda r: r['redis_b_per_service'] * r['services'] / 2**20)} MiB.")


if __name__ == "__main__":
    main()
