"""prometheus-api-client vs the forecast function's own Prometheus client, measured.

Why this exists: the forecast function reads Prometheus through a small client on `requests`
(`forecast/prometheus_source.py`: one form-encoded POST per range query, the answer scanned as
bytes into numpy), not through prometheus-api-client, the library a user might expect. This puts
numbers on that choice, each side in a fresh virtualenv of its own:

- what installing it adds to the forecast function's environment, which already holds what our
  client imports (requests, numpy, prometheus-client): distributions and size on disk, in a
  virtualenv with those against one with those plus prometheus-api-client;
- a fresh interpreter's import: time, resident memory (VmRSS), modules loaded
  (`from prometheus_api_client import PrometheusConnect` against `import forecast.prometheus_source`,
  which brings numpy, requests and the function's own metrics module);
- one range query of a day of minutes for N series, served by a local HTTP server that answers
  every request with the same Prometheus `query_range` body: wall time of the call, and the
  peak Python memory it allocates (tracemalloc), median of `--calls`. prometheus-api-client's
  `custom_query_range` returns the parsed JSON (a list per series of [time, "value"] pairs);
  ours returns numpy arrays of (time, value), which is what the forecast needs.

    python bench/bench_prometheus_clients.py [--series 1000] [--calls 5] [--work DIR]

It creates two virtualenvs with pip, from the configured index: "ours" (requests, numpy,
prometheus-client: the third-party modules our client's package imports) and "both" (the same
plus prometheus-api-client), where prometheus-api-client is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OURS = ["requests>=2.31,<3", "numpy>=1.26,<3", "prometheus-client>=0.20,<1"]
THEIRS = [*OURS, "prometheus-api-client>=0.5,<1"]

SERVER = r'''
import http.server, json, sys, threading
body = open(sys.argv[1], "rb").read()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_GET = do_POST = _answer
    def log_message(self, *a):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(server.server_address[1], flush=True)
server.serve_forever()
'''

PROBE_IMPORT = r'''
import sys, time
t = time.perf_counter()
exec(sys.argv[1])
d = time.perf_counter() - t
rss = open("/proc/self/status").read().split("VmRSS:")[1].split()[0]
print(d, rss, len(sys.modules))
'''

PROBE_CALL_THEIRS = r'''
import json, statistics, sys, time, tracemalloc
from datetime import datetime, timezone
from prometheus_api_client import PrometheusConnect
url, calls = sys.argv[1], int(sys.argv[2])
client = PrometheusConnect(url=url, disable_ssl=True)
start, end = datetime.fromtimestamp(60, timezone.utc), datetime.fromtimestamp(1440 * 60, timezone.utc)
times, peaks = [], []
for _ in range(calls):
    tracemalloc.start()
    t = time.perf_counter()
    result = client.custom_query_range("requests", start_time=start, end_time=end, step="60")
    times.append(time.perf_counter() - t)
    peaks.append(tracemalloc.get_traced_memory()[1])
    tracemalloc.stop()
samples = sum(len(r["values"]) for r in result)
print(json.dumps({"seconds": statistics.median(times), "peak_bytes": statistics.median(peaks), "samples": samples}))
'''

PROBE_CALL_OURS = r'''
import json, statistics, sys, time, tracemalloc
from datetime import datetime, timezone
from forecast.metric_presets import PRESETS
from forecast.prometheus_source import PrometheusSource
url, calls = sys.argv[1], int(sys.argv[2])
source = PrometheusSource(url, PRESETS["knative-1.21"], timeout_s=60)
start, end = datetime.fromtimestamp(60, timezone.utc), datetime.fromtimestamp(1440 * 60, timezone.utc)
times, peaks = [], []
for _ in range(calls):
    tracemalloc.start()
    t = time.perf_counter()
    result = list(source._query_range("requests", start, end))
    times.append(time.perf_counter() - t)
    peaks.append(tracemalloc.get_traced_memory()[1])
    tracemalloc.stop()
samples = sum(len(pairs) // 2 for _, pairs in result)
print(json.dumps({"seconds": statistics.median(times), "peak_bytes": statistics.median(peaks), "samples": samples}))
'''


def venv(path: Path, packages: list[str]) -> tuple[Path, int, float]:
    """A fresh virtualenv with `packages`; its python, distributions installed beyond pip, and
    their size on disk (MiB)."""
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    python = path / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *packages], check=True)
    return (python, *_measure_existing(path))


def matrix_body(series: int, minutes: int = 1440) -> bytes:
    result = [{"metric": {"k8s_namespace_name": "models", "kn_service_name": f"svc-{i:05d}"},
               "values": [[60 * (m + 1), str((i * 7 + m) % 13)] for m in range(minutes)]} for i in range(series)]
    return json.dumps({"status": "success", "data": {"resultType": "matrix", "result": result}},
                      separators=(",", ":")).encode()


def probe(python: Path, code: str, *args: str, env: dict | None = None) -> str:
    return subprocess.run([str(python), "-c", code, *args], capture_output=True, text=True, check=True,
                          env=env or os.environ.copy()).stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--imports", type=int, default=5)
    parser.add_argument("--work", default=None, help="keep the virtualenvs here (default: a temporary directory)")
    parser.add_argument("--format", choices=("table", "json"), default="table")
    args = parser.parse_args(argv)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench-prom-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        sides = {}
        ours_env = {**os.environ, "PYTHONPATH": str(ROOT / "functions" / "forecast")}
        for label, packages, statement, call, env in (
                ("prometheus-api-client", THEIRS, "from prometheus_api_client import PrometheusConnect", PROBE_CALL_THEIRS,
                 os.environ.copy()),
                ("ours (forecast/prometheus_source.py)", OURS, "import forecast.prometheus_source", PROBE_CALL_OURS, ours_env)):
            folder = work / ("both" if label.startswith("prometheus") else "ours")
            if (folder / "bin" / "python").exists():  # --work kept from an earlier run
                python, (count, size) = folder / "bin" / "python", _measure_existing(folder)
            else:
                python, count, size = venv(folder, packages)
            imports = [probe(python, PROBE_IMPORT, statement, env=env).split() for _ in range(args.imports)]
            imports.sort(key=lambda row: float(row[0]))
            seconds, rss, modules = imports[len(imports) // 2]
            sides[label] = {"python": python, "env": env, "call": call, "distributions": count, "size_mib": size,
                            "import_s": float(seconds), "rss_mib": int(rss) / 1024, "modules": int(modules)}
        body_file = work / "query_range.json"
        body_file.write_bytes(matrix_body(args.series))
        server = subprocess.Popen([sys.executable, "-c", SERVER, str(body_file)], stdout=subprocess.PIPE, text=True)
        try:
            url = f"http://127.0.0.1:{server.stdout.readline().strip()}"
            for side in sides.values():
                side.update(json.loads(probe(side["python"], side["call"], url, str(args.calls), env=side["env"])))
        finally:
            server.terminate()
            server.wait()
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    measured = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    if args.format == "json":
        print(json.dumps({"measured": measured, "series": args.series,
                          "sides": {k: {kk: vv for kk, vv in v.items() if kk not in ("python", "env", "call")}
                                    for k, v in sides.items()}}, indent=1))
        return 0
    theirs, ours = sides["prometheus-api-client"], sides["ours (forecast/prometheus_source.py)"]
    print(f"measured {measured}; one query_range answer of {args.series} series x 1440 minutes "
          f"({theirs['samples']:,} samples), median of {args.calls} calls; imports median of {args.imports}\n")
    print(f"installing prometheus-api-client beside what our client imports adds "
          f"{theirs['distributions'] - ours['distributions']} distributions, "
          f"{theirs['size_mib'] - ours['size_mib']:.1f} MiB\n")
    print("| measure | prometheus-api-client | ours | ours / theirs |")
    print("|---|---:|---:|---:|")
    rows = (
            ("import, s (fresh interpreter)", "import_s", "{:.3f}"),
            ("RSS after import, MiB", "rss_mib", "{:.1f}"),
            ("modules loaded after import", "modules", "{:d}"),
            ("one range query, s", "seconds", "{:.3f}"),
            ("peak Python memory of that call, MiB", "peak_bytes", None))
    for title, key, fmt in rows:
        a, b = theirs[key], ours[key]
        if key == "peak_bytes":
            a, b, fmt = a / 2**20, b / 2**20, "{:.1f}"
        print(f"| {title} | {fmt.format(a)} | {fmt.format(b)} | {b / a:.2f}x |")
    return 0


def _measure_existing(folder: Path) -> tuple[int, float]:
    python = folder / "bin" / "python"
    listed = json.loads(subprocess.run([str(python), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
                                       capture_output=True, text=True, check=True).stdout)
    count = len([d for d in listed if d["name"].lower() not in ("pip", "setuptools")])
    site = next(folder.glob("lib/python*/site-packages"))
    size = sum(f.stat().st_size for f in site.rglob("*") if f.is_file() and not f.is_symlink())
    size -= sum(f.stat().st_size for d in site.glob("pip*") for f in d.rglob("*") if f.is_file())
    return count, size / 2**20


if __name__ == "__main__":
    sys.exit(main())
