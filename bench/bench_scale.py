"""Scale function decision time for one forecast event covering N services (100 / 1,000 /
10,000), against the Kubernetes API double over HTTP, the function under func-python with real
Redis. Three events per size: the first (every service raised: list + get + patch each), a
repeat with nothing changed (target: no API call beyond the per-namespace list), and one where
10% of services change. Target (issue 6): 1,000 services decided and patched in < 5 s.

    make bench-scale        # or: .venv/bin/python bench/bench_scale.py --sizes 100 1000 10000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import requests
from cloudevents.core.bindings.http import to_binary_event
from cloudevents.core.v1.event import CloudEvent

from localmode.processes import start_redis, start_function, stop
from localmode.kube_api_double import KubeApiDouble, scale_function_rules
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
TICK0 = 29_000_000
NAMESPACES = 10


def event(n: int, tick: int, busy: set[int], event_id: str) -> CloudEvent:
    services = []
    for i in range(n):
        rps = 25.0 if i in busy else 0.0
        services.append({"service": f"ns-{i % NAMESPACES}/svc-{i:05d}", "status": "ok", "minutes": [
            {"start": "", "point_rps": rps / 2, "upper_rps": rps, "p_any": 0.99 if i in busy else 0.0}] * 5})
    when = datetime.fromtimestamp(tick * 60, timezone.utc)
    return CloudEvent(attributes={"type": "io.predictive-scaling.forecast.v1", "source": "/bench", "id": event_id,
                                  "time": when, "datacontenttype": "application/json"},
                      data={"tick": when.strftime("%Y-%m-%dT%H:%M:%SZ"), "services": services})


def run(n: int, base: Path) -> list[dict]:
    rules = scale_function_rules(ROOT, namespaces=[f"ns-{k}" for k in range(NAMESPACES)])
    double = KubeApiDouble(rules)
    for i in range(n):
        double.add_service(f"ns-{i % NAMESPACES}", f"svc-{i:05d}", {"predictive-scaling.io/enabled": "true"})
    store = start_redis(base / "redis")
    env = {"REDIS_URL": store.url, "KUBERNETES_API_URL": double.url, "MAX_FORECAST_AGE_SECONDS": "0",
           "WARMUP": "false", "COOLDOWN_SECONDS": "0", "LOG_LEVEL": "WARNING",
           "ACCEPTED_SOURCES": "/bench", "MANAGED_NAMESPACES": ",".join(f"ns-{k}" for k in range(NAMESPACES))}
    url, fn = start_function(ROOT / "functions" / "scale", env, base / "fn.log")
    rows = []
    try:
        plan = [("first: all raised", set(range(n))), ("repeat: unchanged", set(range(n))),
                ("10% lowered", set(range(n)) - set(range(0, n, 10)))]
        for k, (label, busy) in enumerate(plan):
            message = to_binary_event(event(n, TICK0 + k, busy, f"bench-{k}"))
            calls = len(double.requests)
            started = time.perf_counter()
            r = requests.post(url, data=message.body, headers=message.headers, timeout=600)
            wall = time.perf_counter() - started
            assert r.status_code == 200, r.text[:300]
            new = double.requests[calls:]
            data = r.json()
            rows.append({"services": n, "event": label, "wall_s": wall,
                         "applied": sum(d["applied"] for d in data["decisions"]),
                         "calls": len(new), "patches": sum(c.method == "PATCH" for c in new)})
    finally:
        stop(fn)
        store.stop()
        double.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    args = parser.parse_args()
    rows = []
    for n in tqdm(args.sizes, desc="bench-scale: sizes", unit="size", file=sys.stderr):
        with tempfile.TemporaryDirectory(prefix=f"bench-scale-{n}-") as tmp:
            rows += run(n, Path(tmp))
    print("\n| services | event | wall s | services patched | API calls | of which PATCH | calls / service |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['services']:,} | {r['event']} | {r['wall_s']:.2f} | {r['applied']:,} | {r['calls']:,} | "
              f"{r['patches']:,} | {r['calls'] / r['services']:.2f} |")


if __name__ == "__main__":
    main()
