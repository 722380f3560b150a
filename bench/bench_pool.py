"""The model pool's numbers, in one run: its start and memory per entry at repository sizes
(targets: ready within 1 s at 10,000 entries, <= 2 KiB per entry), model load time in a warm
pod, the estimated model footprint against the measured one, and the pool pod's cold start
against the one-model server's. Prints Markdown tables with ratios and says which target is
met or missed.

    make bench-pool SIZES="1000 10000"   # or: .venv/bin/python bench/bench_pool.py --sizes 1000 10000
                                         #     [--only-sizes] [--loads 200] [--cold-starts 5]

Sizes (targets: ready within 1 s with 10,000 entries, <= 2 KiB per unloaded entry): a repository
of N entries (the example models' manifest entries under N names, one file each per model), per
size: the in-process verification time (manifest read, parsed, every entry checked, the pool's
slots made; median of 5), the pool server's start (spawn -> /v2/health/ready, gunicorn, and its
own `infer_start_to_ready_seconds` from the kernel's process start), the server's memory (PSS)
per entry against a 2-entry repository's, the control port's index call, a request's time through
routing to a loaded model, and the /metrics size after requests for 300 distinct models (the
label cap, METRIC_MODELS, bounds it).

Load time (target p99 < 50 ms, ONNX wine and diabetes): one pool server (`python -m
infer.serve --repository`, as `make serve-pool` runs it) on a copy of models/; per model,
`--loads` times: unload it through the repository API, then one V2 infer, which loads it on
demand. Reported: the server's own load time (read, sha256, onnxruntime session, warm-up
prediction; from its "pool model loaded" log line), what the client saw for that first request
(load + predict + HTTP), and a request to the loaded model for comparison. The pod is warm: the
server is up and its runtime imported (the pool imports it before ready).

Footprint: a pool on a repository of 100 copies of the example models (50 wine, 50 diabetes),
once as ONNX and once as joblib (the manifest pinned); the server's RSS (process tree) after one
load and after loading all the others, per model, against the estimate the budget uses
(`infer.pool.footprint_bytes`).

Cold start: spawn -> first successful V2 infer of wine, median of `--cold-starts` taken
round-robin, for the one-model server on wine.onnx and the pool on models/, each under gunicorn
(the standalone server) and func-python (what `func deploy` builds). The pool's first answer
includes verifying the manifest and loading the model on that request.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from sklearn.datasets import load_diabetes, load_wine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "functions" / "infer"))

from bench_infer import Server, free_port, memory_mib, post, stop  # noqa: E402  (same helpers as bench-infer)

from bench.growth import estimate  # noqa: E402
from infer.pool import footprint_bytes  # noqa: E402
from infer.repository import read_repository  # noqa: E402
from training.publish_model import pinned_env  # noqa: E402

MODELS = ROOT / "models"
PY = str(ROOT / ".venv" / "bin" / "python")
INFER_PATH = str(ROOT / "functions" / "infer")
ROWS = {"wine": load_wine().data[:1], "diabetes": load_diabetes().data[:1]}
LOAD_TARGET_P99_MS = 50.0


def spawn_logged(server: Server, log: Path) -> subprocess.Popen:
    """As Server.spawn, with the server's output kept (its JSON log lines are read back)."""
    return subprocess.Popen(server.command, cwd=server.cwd, env={**os.environ, **server.env}, stdout=log.open("ab"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def v2_body(rows: np.ndarray) -> bytes:
    return json.dumps({"inputs": [{"name": "input-0", "shape": list(rows.shape), "datatype": "FP64",
                                   "data": rows.ravel().tolist()}]}).encode()


def call(url: str, body: bytes = b"") -> None:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as r:
        r.read()


def pool_server(repository: Path, name: str = "pool gunicorn", log_level: str = "WARNING") -> Server:
    port = free_port()
    server = Server(name, [PY, "-m", "infer.serve", "--repository", str(repository), "--port", str(port)], port,
                    {"PYTHONPATH": INFER_PATH, "LOG_LEVEL": log_level, "POOL_CONTROL_PORT": str(free_port())})
    return server


def control(server: Server) -> str:
    """The pool's control port (its repository API is served there only)."""
    return f"http://127.0.0.1:{server.env['POOL_CONTROL_PORT']}"


def wait_control(server: Server, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{control(server)}/v2/health/live", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.01)
    raise TimeoutError(f"{server.name}'s control port did not open within {timeout} s")


def cold_start_servers() -> list[Server]:
    out = []
    port = free_port()
    out.append(Server("one model gunicorn", [PY, "-m", "infer.serve", "--model", str(MODELS / "wine.onnx"), "--port", str(port)],
                      port, {"PYTHONPATH": INFER_PATH, "LOG_LEVEL": "WARNING", **pinned_env(MODELS / "wine.onnx")}))
    out.append(pool_server(MODELS))
    for label, env in (("one model func-python", {"MODEL_ROOT": str(MODELS), "MODEL_PATH": "wine.onnx"}),
                       ("pool func-python", {"MODEL_REPOSITORY": str(MODELS)})):
        port = free_port()
        out.append(Server(label, [PY, str(ROOT / "scripts" / "run_function.py"), INFER_PATH], port,
                          {"PYTHONPATH": INFER_PATH, "LISTEN_ADDRESS": f"127.0.0.1:{port}", "LOG_LEVEL": "WARNING", **env}))
    return out


def wait_ready(server: Server, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{server.url}/v2/health/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.01)
    raise TimeoutError(f"{server.name} was not ready within {timeout} s")


def first_infer(server: Server, proc: subprocess.Popen, timeout: float = 60) -> float:
    started = time.perf_counter()
    body = v2_body(ROWS["wine"])
    while time.perf_counter() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {proc.returncode}")
        try:
            post(f"{server.url}/v2/models/wine/infer", body, timeout=2)
            return time.perf_counter() - started
        except OSError:
            time.sleep(0.005)
    raise TimeoutError(f"{server.name} did not answer within {timeout} s")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def measure_loads(repository: Path, loads: int, work: Path) -> dict[str, dict[str, list[float]]]:
    log = work / "pool-loads.log"
    server = pool_server(repository, log_level="INFO")
    proc = spawn_logged(server, log)
    results: dict[str, dict[str, list[float]]] = {}
    try:
        wait_ready(server, proc)
        wait_control(server, proc)
        for model, rows in ROWS.items():
            body = v2_body(rows)
            first, warm = [], []
            for i in range(loads):
                call(f"{control(server)}/v2/repository/models/{model}/unload")
                started = time.perf_counter()
                post(f"{server.url}/v2/models/{model}/infer", body)
                first.append(time.perf_counter() - started)
                started = time.perf_counter()
                post(f"{server.url}/v2/models/{model}/infer", body)
                warm.append(time.perf_counter() - started)
                if (i + 1) % 50 == 0:
                    print(f"  {model}: {i + 1}/{loads} loads", file=sys.stderr, flush=True)
            results[model] = {"first": first, "warm": warm}
    finally:
        stop(proc)
    for model in ROWS:
        results[model]["server"] = [line["load_seconds"] for line in map(json.loads, _json_lines(log))
                                    if line.get("msg") == "pool model loaded" and line.get("model") == model]
    return results


def _json_lines(log: Path) -> list[str]:
    return [line for line in log.read_text(errors="replace").splitlines() if line.startswith("{")]


def measure_footprint(work: Path, fmt: str, copies: int = 50) -> dict[str, float]:
    """RSS per model of `fmt` (the ONNX fast path, or joblib for the scikit-learn runtime)."""
    import hashlib

    repository = work / f"footprint-{fmt}"
    repository.mkdir()
    manifest = json.loads((MODELS / "manifest.json").read_text())
    entries = []
    for entry in (e for e in manifest["artifacts"] if e["format"] == fmt):
        suffix = Path(entry["path"]).suffix
        for i in range(copies):
            name = f"{entry['name']}-{i}"
            shutil.copy(MODELS / entry["path"], repository / f"{name}{suffix}")
            entries.append({**entry, "name": name, "path": f"{name}{suffix}"})
    (repository / "manifest.json").write_text(json.dumps({"artifacts": entries}))
    pin = hashlib.sha256((repository / "manifest.json").read_bytes()).hexdigest()
    estimates = [footprint_bytes(e, (repository / e.path).stat().st_size)
                 for e in read_repository(repository, (fmt,), pin).models.values()]
    server = pool_server(repository)
    server.env.update(POOL_MEMORY_MB="4096", MODEL_REPOSITORY_SHA256=pin)
    proc = server.spawn()
    try:
        wait_ready(server, proc)
        wait_control(server, proc)
        # one load first: allocator arenas and the runtime's first-model state are the
        # process's, not any model's
        call(f"{control(server)}/v2/repository/models/{entries[0]['name']}/load")
        time.sleep(0.2)
        before, _ = memory_mib(proc.pid)
        charged_before = scrape(server.url, "infer_pool_memory_used_bytes")
        for entry in entries[1:]:
            call(f"{control(server)}/v2/repository/models/{entry['name']}/load")
        time.sleep(0.2)
        after, _ = memory_mib(proc.pid)
        charged = (scrape(server.url, "infer_pool_memory_used_bytes") - charged_before) / (len(entries) - 1)
    finally:
        stop(proc)
    measured = (after - before) * 2**20 / (len(entries) - 1)
    return {"measured": measured, "estimated": statistics.mean(estimates[1:]), "models": len(entries) - 1,
            "charged": charged}


def scrape(url: str, name: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


def sized_repository(work: Path, n: int) -> Path:
    """N entries: the example models' ONNX entries under N names (one file per model)."""
    repository = work / f"sized-{n}"
    repository.mkdir()
    manifest = json.loads((MODELS / "manifest.json").read_text())
    onnx = [e for e in manifest["artifacts"] if e["format"] == "onnx"]
    for e in onnx:
        shutil.copy(MODELS / e["path"], repository / e["path"])
    entries = onnx + [{**onnx[i % len(onnx)], "name": f"m{i:06d}"} for i in range(max(0, n - len(onnx)))]
    (repository / "manifest.json").write_text(json.dumps({"artifacts": entries}))
    return repository


def pss_bytes(pid: int) -> int:
    total = 0
    pids = [pid]
    try:
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process and its children now (/proc/<pid>/stat): the
    start's own work, which the machine's load does not inflate as it does wall time."""
    ticks = os.sysconf("SC_CLK_TCK")
    pids = [pid]
    try:
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    total = 0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / ticks


def measure_size(work: Path, n: int) -> dict[str, float]:
    from infer.pool import ModelPool
    from infer.settings import InferSettings

    repository = sized_repository(work, n)
    settings = InferSettings.from_env({"MODEL_REPOSITORY": str(repository)})
    verify, verify_cpu = [], []
    for _ in range(5):
        pool = ModelPool(settings)
        started, cpu = time.perf_counter(), time.process_time()
        assert pool.verify(), pool.reason
        verify.append(time.perf_counter() - started)
        verify_cpu.append(time.process_time() - cpu)
    server = pool_server(repository)
    spawned = time.perf_counter()
    proc = server.spawn()
    try:
        wait_ready(server, proc)
        ready = time.perf_counter() - spawned
        start_cpu = cpu_seconds(proc.pid)
        wait_control(server, proc)
        time.sleep(0.3)
        pss = pss_bytes(proc.pid)
        start_to_ready = scrape(server.url, "infer_start_to_ready_seconds")
        started = time.perf_counter()
        call(f"{control(server)}/v2/repository/index", b'{"ready": true}')
        index_s = time.perf_counter() - started
        body = v2_body(ROWS["wine"])
        post(f"{server.url}/v2/models/wine/infer", body)
        times = []
        for _ in range(200):
            started = time.perf_counter()
            post(f"{server.url}/v2/models/wine/infer", body)
            times.append(time.perf_counter() - started)
        for i in range(min(300, n - 2)):
            try:
                urllib.request.urlopen(f"{server.url}/v2/models/m{i:06d}/ready", timeout=5)
            except OSError:
                pass  # 503: not loaded (asking does not load it); the request is counted all the same
        with urllib.request.urlopen(f"{server.url}/metrics", timeout=5) as r:
            metrics_bytes = len(r.read())
    finally:
        stop(proc)
    return {"entries": n, "verify_s": statistics.median(verify), "verify_cpu_s": statistics.median(verify_cpu),
            "start_cpu_s": start_cpu, "ready_s": ready, "start_to_ready_s": start_to_ready,
            "pss": pss, "index_s": index_s, "infer_p50_ms": percentile(times, 50) * 1000, "metrics_bytes": metrics_bytes}


def measure_cold_starts(rounds: int) -> dict[str, list[float]]:
    fleet = cold_start_servers()
    cold: dict[str, list[float]] = {s.name: [] for s in fleet}
    for r in range(rounds):  # round-robin, so that drifting machine load hits all alike
        for server in fleet:
            proc = server.spawn()
            try:
                cold[server.name].append(first_infer(server, proc))
            finally:
                stop(proc)
        print(f"  cold starts: round {r + 1}/{rounds}", file=sys.stderr, flush=True)
    return cold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loads", type=int, default=200, help="loads per model (unload, then a request)")
    parser.add_argument("--cold-starts", type=int, default=9)
    parser.add_argument("--sizes", type=int, nargs="*", default=[1000, 10000], help="repository sizes (entries)")
    parser.add_argument("--only-sizes", action="store_true", help="print the sizes table only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-pool-") as tmp:
        work = Path(tmp)
        print("repository sizes ...", file=sys.stderr, flush=True)
        base = measure_size(work, 2)
        sizes = [measure_size(work, n) for n in args.sizes]
        print_sizes(base, sizes)
        if args.only_sizes:
            return
        repository = work / "repo"
        shutil.copytree(MODELS, repository, ignore=shutil.ignore_patterns("forecaster"))
        print("load time in a warm pod ...", file=sys.stderr, flush=True)
        loads = measure_loads(repository, args.loads, work)
        print("footprint ...", file=sys.stderr, flush=True)
        footprint = {fmt: measure_footprint(work, fmt) for fmt in ("onnx", "joblib")}
        print("cold starts ...", file=sys.stderr, flush=True)
        cold = measure_cold_starts(args.cold_starts)
    print_tables(loads, footprint, cold, args)


def print_sizes(base: dict, sizes: list[dict]) -> None:
    print("\n### Repository size: start and memory per entry (targets: ready <= 1 s at 10,000, <= 2 KiB per entry)\n")
    print("| entries | verify (in-process) ms | verify CPU ms | spawn -> ready s | process start -> ready s "
          "| start CPU s | start added vs 2 entries s | start CPU added s "
          "| PSS MiB | memory per entry KiB | index (control) ms | loaded infer p50 ms | /metrics KiB | |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in [base, *sizes]:
        added = r["start_to_ready_s"] - base["start_to_ready_s"]
        per_entry = (r["pss"] - base["pss"]) / max(1, r["entries"] - base["entries"])
        verdict = ""
        if r is not base:
            verdict = (f"ready {'met' if r['start_to_ready_s'] <= 1.0 else 'MISSED'} ({r['start_to_ready_s']:.2f}x 1 s), "
                       f"memory {'met' if per_entry <= 2048 else 'MISSED'} ({per_entry / 2048:.2f}x 2 KiB)")
        print(f"| {r['entries']} | {r['verify_s'] * 1000:.1f} | {r['verify_cpu_s'] * 1000:.1f} | {r['ready_s']:.2f} "
              f"| {r['start_to_ready_s']:.2f} | {r['start_cpu_s']:.2f} | {added:+.2f} "
              f"| {r['start_cpu_s'] - base['start_cpu_s']:+.2f} | {r['pss'] / 2**20:.0f} | {per_entry / 1024 if r is not base else 0:.2f} | "
              f"{r['index_s'] * 1000:.1f} | {r['infer_p50_ms']:.2f} | {r['metrics_bytes'] / 1024:.0f} | {verdict} |")
    print("process start -> ready: the server's infer_start_to_ready_seconds (interpreter, imports, runtime warm-up, "
          "manifest verified); spawn -> ready adds the client's polling. start CPU: the server's user + system CPU "
          "seconds when it answered ready (the start's work, not inflated by other load as wall time is).")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"({os.cpu_count()} CPUs)")
    if len(sizes) >= 2:
        rows = [{**r, "services": r["entries"]} for r in sizes]
        print(f"\nOn paper, 100,000 entries (from the growth {rows[-2]['entries']:,} -> {rows[-1]['entries']:,}): "
              f"start added vs 2 entries {estimate(rows, lambda r: r['start_to_ready_s'] - base['start_to_ready_s'], digits=2)} s; "
              f"verify (in-process) {estimate(rows, lambda r: r['verify_s'], digits=2)} s; "
              f"PSS {estimate(rows, lambda r: r['pss'] / 2**20, digits=0)} MiB.")


def print_tables(loads: dict, footprint: dict, cold: dict, args: argparse.Namespace) -> None:
    ms = 1000.0
    print(f"\n### Pool model load in a warm pod ({args.loads} loads per model: unload, then one V2 infer)\n")
    print("| model (ONNX) | server load p50 ms | server load p99 ms | first request p50 ms | first request p99 ms "
          "| loaded request p50 ms | p99 load target | |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for model, r in loads.items():
        p99 = percentile(r["server"], 99) * ms
        verdict = "met" if p99 < LOAD_TARGET_P99_MS else "MISSED"
        print(f"| {model} | {percentile(r['server'], 50) * ms:.2f} | {p99:.2f} | {percentile(r['first'], 50) * ms:.2f} "
              f"| {percentile(r['first'], 99) * ms:.2f} | {percentile(r['warm'], 50) * ms:.2f} "
              f"| < {LOAD_TARGET_P99_MS:.0f} | {verdict} ({p99 / LOAD_TARGET_P99_MS:.2f}x the target) |")
    print("\n### Model footprint: measured vs the budget's estimate (100 models of each format loaded in one pool)\n")
    print("| format | models | RSS delta per model KiB | estimate per model KiB | charged per model KiB "
          "| estimate / measured | charged / measured |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for fmt, f in footprint.items():
        print(f"| {fmt} | {f['models']} | {f['measured'] / 1024:.0f} | {f['estimated'] / 1024:.0f} | {f['charged'] / 1024:.0f} "
              f"| {f['estimated'] / max(f['measured'], 1):.2f}x | {f['charged'] / max(f['measured'], 1):.2f}x |")
    print(f"\n### Cold start: spawn -> first V2 infer of wine (median of {args.cold_starts}, round-robin)\n")
    print("| server | one model s | pool s | pool / one model | target: no worse |")
    print("|---|---:|---:|---:|---|")
    for kind in ("gunicorn", "func-python"):
        one = statistics.median(cold[f"one model {kind}"])
        pool = statistics.median(cold[f"pool {kind}"])
        verdict = "met" if pool <= one * 1.05 else "MISSED"
        print(f"| {kind} | {one:.2f} | {pool:.2f} | {pool / one:.2f}x | {verdict} |")
    print(f"\nall cold starts (s): {json.dumps({k: [round(v, 3) for v in vs] for k, vs in cold.items()})}")
    print("'no worse' is read as within 5% of the one-model server's median (the run-to-run spread here).")


if __name__ == "__main__":
    main()
