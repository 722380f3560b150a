"""Flask vs the server's own raw WSGI adapter, on the same data plane and the same model.

Why this exists: the inference server has no web framework (`infer/app.py` turns a WSGI environ
into the data plane's `Request` and back, and so does the ASGI adapter for func-python). A user
who expects Flask deserves the cost of the alternative, measured: the same `DataPlane.handle`
behind a thin Flask app (one catch-all route that builds the same `Request`), called with the
same requests.

What it measures, in one process, alternating the two apps in rounds so that drifting machine
load hits both alike:
- per-request time through each WSGI callable, no HTTP server in between (the framework's own
  cost: routing, request and response objects), for a 1-row V2 infer, a V2 model-metadata GET and
  a 404, median over rounds of the mean of `--requests` calls;
- import time and resident memory each framework adds to a fresh interpreter (`import flask`
  against `import infer.app`), median of `--imports` fresh processes.

    python bench/bench_wsgi_frameworks.py [--model models/wine.onnx] [--rounds 7] [--requests 2000]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "functions" / "infer"))
sys.path.insert(0, str(ROOT))

WINE_ROW = [14.23, 1.71, 2.43, 15.6, 127.0, 2.8, 3.06, 0.28, 2.29, 5.64, 1.04, 3.92, 1065.0]


def flask_app(plane):
    """The same data plane behind Flask: what a Flask build of this server would be at its thinnest."""
    from flask import Flask, Response, request

    from infer.http_io import Request

    app = Flask("infer")

    @app.route("/", defaults={"path": ""}, methods=["GET", "POST", "HEAD", "PUT", "DELETE"])
    @app.route("/<path:path>", methods=["GET", "POST", "HEAD", "PUT", "DELETE"])
    def everything(path):
        headers = {k.lower(): v for k, v in request.headers.items()}
        ours = Request(request.method, request.path, headers)
        ours.raw_body = request.get_data()
        reply = plane.handle(ours)
        return Response(reply.body, status=reply.status, content_type=reply.content_type, headers=reply.headers)

    return app


def environ(method: str, path: str, body: bytes = b"") -> dict:
    return {"REQUEST_METHOD": method, "PATH_INFO": path, "SCRIPT_NAME": "", "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8080", "SERVER_PROTOCOL": "HTTP/1.1",
            "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(body)), "HTTP_HOST": "127.0.0.1:8080",
            "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr, "wsgi.multithread": False, "wsgi.multiprocess": False,
            "wsgi.run_once": False}


def call(app, method: str, path: str, body: bytes) -> tuple[str, bytes]:
    status = []
    chunks = app(environ(method, path, body), lambda s, h, exc_info=None: status.append(s))
    payload = b"".join(chunks)
    if hasattr(chunks, "close"):
        chunks.close()
    return status[0], payload


def per_request_us(app, method: str, path: str, body: bytes, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        call(app, method, path, body)
    return (time.perf_counter() - start) / n * 1e6


def import_cost(statement: str, repeats: int) -> tuple[float, float, int]:
    """Median wall time of the import, resident memory (VmRSS) and modules loaded after it, in
    fresh interpreters."""
    code = ("import sys, time; t = time.perf_counter(); " + statement + "; d = time.perf_counter() - t; "
            "rss = open('/proc/self/status').read().split('VmRSS:')[1].split()[0]; print(d, rss, len(sys.modules))")
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'functions' / 'infer'}:{ROOT}"}
    seconds, rss, modules = [], [], []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
        d, kib, count = out.split()
        seconds.append(float(d))
        rss.append(int(kib) / 1024)
        modules.append(int(count))
    return statistics.median(seconds), statistics.median(rss), int(statistics.median(modules))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "wine.onnx"))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--imports", type=int, default=5)
    parser.add_argument("--format", choices=("table", "json"), default="table")
    args = parser.parse_args(argv)

    from infer.app import build
    from infer.settings import InferSettings
    from training.publish_model import pinned_env

    model = Path(args.model).resolve()
    settings = InferSettings.from_env({"MODEL_ROOT": str(model.parent), "MODEL_PATH": model.name,
                                       "MODEL_THREADS": "1", **pinned_env(str(model))})
    raw, served = build(settings)
    if not served.load():
        raise SystemExit(f"the model did not load: {served}")
    apps = {"raw WSGI (infer/app.py)": raw, "Flask": flask_app(raw.plane)}
    name = served.name if hasattr(served, "name") else model.stem
    infer_body = json.dumps({"inputs": [{"name": "input-0", "shape": [1, 13], "datatype": "FP64", "data": WINE_ROW}]}).encode()
    cases = {
        "V2 infer, 1 row (POST)": ("POST", f"/v2/models/{name}/infer", infer_body),
        "V2 model metadata (GET)": ("GET", f"/v2/models/{name}", b""),
        "unknown model, 404 (GET)": ("GET", "/v2/models/nope", b""),
    }
    for case, (method, path, body) in cases.items():  # both answer the same
        answers = {label: call(app, method, path, body) for label, app in apps.items()}
        statuses = {a[0].split()[0] for a in answers.values()}
        bodies = {a[1] for a in answers.values()}
        if len(statuses) != 1 or len(bodies) != 1:
            raise SystemExit(f"{case}: the two apps answer differently: {answers}")
        for app in apps.values():
            per_request_us(app, method, path, body, 200)  # warm

    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for case, (method, path, body) in cases.items():
            for label, app in apps.items():
                times.setdefault((case, label), []).append(per_request_us(app, method, path, body, args.requests))
    imports = {"raw WSGI (infer/app.py)": import_cost("import infer.app", args.imports),
               "Flask": import_cost("import infer.app, flask", args.imports)}
    results = {"measured": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "model": model.name,
               "rounds": args.rounds, "requests_per_round": args.requests,
               "per_request_us": {f"{c} | {l}": statistics.median(v) for (c, l), v in times.items()},
               "import": {l: {"seconds": s, "rss_mib": r, "modules": m} for l, (s, r, m) in imports.items()}}
    if args.format == "json":
        print(json.dumps(results, indent=1))
        return 0
    raw_label, flask_label = list(apps)
    print(f"per request, in-process WSGI call, median of {args.rounds} rounds x {args.requests} requests ({model.name}):\n")
    print(f"| request | {raw_label} us | Flask us | Flask / raw |")
    print("|---|---:|---:|---:|")
    for case in cases:
        r, f = statistics.median(times[(case, raw_label)]), statistics.median(times[(case, flask_label)])
        print(f"| {case} | {r:.1f} | {f:.1f} | {f / r:.2f}x |")
    (rs, rm, rn), (fs, fm, fn) = imports[raw_label], imports[flask_label]
    print(f"\nimport in a fresh interpreter, median of {args.imports}:\n")
    print("| | raw WSGI (infer.app) | + Flask | added |")
    print("|---|---:|---:|---:|")
    print(f"| import s | {rs:.3f} | {fs:.3f} | +{fs - rs:.3f} |")
    print(f"| RSS after import MiB | {rm:.1f} | {fm:.1f} | +{fm - rm:.1f} |")
    print(f"| modules loaded | {rn} | {fn} | +{fn - rn} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
