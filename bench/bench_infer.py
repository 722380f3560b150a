"""Side-by-side benchmark: this inference server vs MLServer, same machine, same model file,
same load generator (wrk), in one run. Prints a Markdown table with ratios.

    make bench-infer            # or: .venv/bin/python bench/bench_infer.py [--duration 8]

Servers measured (ours twice: the ONNX file, the default, and the joblib file it was converted from):
  onnx gunicorn        python -m infer.serve --model wine.onnx, the standalone server (sync workers, one per CPU)
  onnx func-python     the same data plane as `func deploy` runs it: func-python's hypercorn + our ASGI adapter
  joblib gunicorn      the standalone server on wine.joblib (scikit-learn in the process)
  joblib func-python   the function on wine.joblib
  MLServer             mlserver 1.7.1 + mlserver-sklearn, defaults except ports, on wine.joblib
  MLServer pw=0        the same with parallel_workers: 0 (inference in the main process)

MLServer is installed into its own venv (.venv-mlserver) with the same scikit-learn version, so
it loads the same joblib file (MLServer's ONNX runtime is not maintained in 1.7). Cold start is process spawn -> first successful V2 infer
(median of N, taken round-robin across the servers). Throughput and latency come from wrk (keep-alive
connections) at concurrency 1, 8 and 32 with 1-row and 100-row requests, each level run on every
server in turn; every run is checked for non-2xx answers. The same levels are run a second time
with the client users of the Open Inference Protocol run, tritonclient.http with its defaults
(binary tensor data both ways: the request's tensor and the `predict` output as raw bytes after a
JSON header): one client and one thread per connection, each sending its next request when its
last is answered, the latency of each timed by the client. Its numbers include the client's own
Python work (encoding, decoding), on the same machine as the server. Memory is
the sum over the server's process tree, RSS and PSS (PSS splits shared pages fairly between
forked workers) after the model has loaded and answered.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import joblib
import numpy as np
from sklearn.datasets import load_wine

from training.publish_model import pinned_env
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
MLSERVER_VENV = ROOT / ".venv-mlserver"


@dataclass
class Server:
    name: str
    command: list[str]
    port: int
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = ROOT

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self) -> subprocess.Popen:
        return subprocess.Popen(
            self.command, cwd=self.cwd, env={**os.environ, **self.env},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_mlserver() -> Path:
    python = MLSERVER_VENV / "bin" / "python"
    if not (MLSERVER_VENV / "bin" / "mlserver").exists():
        import sklearn

        subprocess.run(["python3", "-m", "venv", str(MLSERVER_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "mlserver==1.7.1", "mlserver-sklearn==1.7.1",
             "uvloop<0.22", f"scikit-learn=={sklearn.__version__}"],
            check=True,
        )
    return MLSERVER_VENV / "bin" / "mlserver"


def mlserver_folder(parallel_workers: int | None, http_port: int) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="mlserver-"))
    shutil.copy(MODELS / "wine.joblib", folder / "wine.joblib")
    (folder / "model-settings.json").write_text(json.dumps({
        "name": "wine", "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./wine.joblib", "version": "1"},
    }))
    settings = {"http_port": http_port, "grpc_port": free_port(), "metrics_port": free_port()}
    if parallel_workers is not None:
        settings["parallel_workers"] = parallel_workers
    (folder / "settings.json").write_text(json.dumps(settings))
    return folder


def servers(only: set[str] | None = None) -> list[Server]:
    py = str(ROOT / ".venv" / "bin" / "python")
    infer_path = str(ROOT / "functions" / "infer")
    out = []
    for fmt in ("onnx", "joblib"):
        port = free_port()
        out.append(Server(f"{fmt} gunicorn", [py, "-m", "infer.serve", "--model", str(MODELS / f"wine.{fmt}"),
                                              "--port", str(port)], port, {"PYTHONPATH": infer_path, "LOG_LEVEL": "WARNING",
                                                                          **pinned_env(MODELS / f"wine.{fmt}")}))
        port = free_port()
        out.append(Server(f"{fmt} func-python", [py, str(ROOT / "scripts" / "run_function.py"), infer_path], port,
                          {"PYTHONPATH": infer_path, "LISTEN_ADDRESS": f"127.0.0.1:{port}", "MODEL_ROOT": str(MODELS),
                           "MODEL_PATH": f"wine.{fmt}", "LOG_LEVEL": "WARNING", **pinned_env(MODELS / f"wine.{fmt}")}))
    for label, workers in (("MLServer", None), ("MLServer pw=0", 0)):
        if only is not None and label not in only:
            continue
        mlserver = str(ensure_mlserver())
        port = free_port()
        folder = mlserver_folder(workers, port)
        out.append(Server(label, [mlserver, "start", str(folder)], port, cwd=folder))
    return [server for server in out if only is None or server.name in only]


def v2_body(rows: np.ndarray) -> bytes:
    return json.dumps({
        "inputs": [{"name": "input-0", "shape": list(rows.shape), "datatype": "FP64", "data": rows.ravel().tolist()}],
        "outputs": [{"name": "predict"}],
    }).encode()


def post(url: str, body: bytes, timeout: float = 2.0) -> dict:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as r:
        return json.loads(r.read())


def wait_first_infer(server: Server, body: bytes, proc: subprocess.Popen, timeout: float = 60) -> float:
    started = time.perf_counter()
    url = f"{server.url}/v2/models/wine/infer"
    while time.perf_counter() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {proc.returncode}")
        try:
            post(url, body, timeout=1)
            return time.perf_counter() - started
        except OSError:
            time.sleep(0.005)
    raise TimeoutError(f"{server.name} did not answer within {timeout} s")


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, 9)
        except ProcessLookupError:
            pass
        proc.wait()


def process_tree(pid: int) -> list[int]:
    pids, queue = [], [pid]
    while queue:
        current = queue.pop()
        pids.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                queue.extend(int(c) for c in (task / "children").read_text().split())
            except OSError:
                pass
    return pids


def memory_mib(pid: int) -> tuple[float, float]:
    rss = pss = 0
    for p in process_tree(pid):
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            pass
    return rss / 1024, pss / 1024


WRK_LATENCY = re.compile(r"^\s+(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", re.M)


def run_wrk(url: str, body: bytes, connections: int, duration: int) -> dict:
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = [==[{body.decode()}]==]\n"
    )
    threads = 1 if connections == 1 else 2
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--latency", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout
    script.unlink()
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    latency = {q: float(v) * scale[u] for q, v, u in WRK_LATENCY.findall(out)}
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: .*", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50": latency.get("50"), "p99": latency.get("99"),
        "bad": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(0) if errors else "",
    }


def run_triton(server: Server, rows: np.ndarray, connections: int, duration: float) -> dict:
    """tritonclient.http with its defaults (binary tensors both ways) from `connections` threads,
    one client each, for `duration` seconds: req/s and the client-timed latency percentiles."""
    import threading

    import tritonclient.http as httpclient

    stop_at = time.perf_counter() + duration
    latencies: list[list[float]] = [[] for _ in range(connections)]
    bad = [0] * connections

    def worker(i: int) -> None:
        client = httpclient.InferenceServerClient(server.url.removeprefix("http://"), network_timeout=30.0)
        tensor = httpclient.InferInput("input-0", list(rows.shape), "FP64")
        tensor.set_data_from_numpy(rows)  # binary_data=True: tritonclient's default
        outputs = [httpclient.InferRequestedOutput("predict")]  # binary_data=True too
        try:
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                try:
                    client.infer("wine", [tensor], outputs=outputs).as_numpy("predict")
                except Exception:  # an error answer (or none) is counted, not timed
                    bad[i] += 1
                    continue
                latencies[i].append(time.perf_counter() - started)
        finally:
            client.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    times = sorted(t for ts in latencies for t in ts)

    def pct(q: float) -> float | None:
        return times[min(len(times) - 1, int(q / 100 * len(times)))] * 1000 if times else None

    return {"rps": len(times) / elapsed, "p50": pct(50), "p99": pct(99), "bad": sum(bad), "socket_errors": ""}


def check_triton_predictions(server: Server, model, rows: np.ndarray) -> str | None:
    """None when tritonclient's defaults get the estimator's predictions, else what the server
    answered (a server without the binary tensor data extension refuses the request)."""
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    client = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
    tensor = httpclient.InferInput("input-0", list(rows.shape), "FP64")
    tensor.set_data_from_numpy(rows)
    try:
        result = client.infer("wine", [tensor], outputs=[httpclient.InferRequestedOutput("predict")])
    except InferenceServerException as exc:
        return str(exc).replace("\n", " ")[:300]
    finally:
        client.close()
    got = result.as_numpy("predict")
    if not np.array_equal(got, model.predict(rows)):
        raise AssertionError(f"{server.name} answered tritonclient {got[:5]}..., the estimator says {model.predict(rows)[:5]}...")
    return None


def check_predictions(server: Server, model, rows: np.ndarray) -> None:
    doc = post(f"{server.url}/v2/models/wine/infer", v2_body(rows))
    got = np.asarray(doc["outputs"][0]["data"])
    if not np.array_equal(got, model.predict(rows)):
        raise AssertionError(f"{server.name} answered {got[:5]}..., the estimator says {model.predict(rows)[:5]}...")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=int(os.environ.get("BENCH_DURATION", "8")))
    parser.add_argument("--cold-starts", type=int, default=5)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--only", help="comma-separated server names (default: all), e.g. 'onnx func-python,MLServer'")
    parser.add_argument("--clients", default="wrk,tritonclient",
                        help="load clients, comma-separated: wrk (JSON bodies) and tritonclient (binary tensors)")
    args = parser.parse_args()
    clients = [c for c in args.clients.split(",") if c]
    if set(clients) - {"wrk", "tritonclient"}:
        sys.exit(f"unknown client in --clients {args.clients!r}: wrk, tritonclient")
    if not (MODELS / "wine.joblib").exists():
        sys.exit("models/wine.joblib is missing: run `make models`")
    model = joblib.load(MODELS / "wine.joblib")
    X = load_wine().data
    arrays = {1: X[:1], 100: np.resize(X, (100, X.shape[1]))}
    bodies = {rows: v2_body(array) for rows, array in arrays.items()}
    levels = [int(c) for c in args.concurrency.split(",")]
    results: dict[str, dict] = {}

    fleet = servers(set(args.only.split(",")) if args.only else None)
    cold: dict[str, list[float]] = {server.name: [] for server in fleet}
    bar = tqdm(total=len(fleet) * (args.cold_starts + len(bodies) * len(levels) * len(clients)), desc="bench-infer",
               unit="run", file=sys.stderr)
    for _ in range(args.cold_starts):  # round-robin, so that drifting machine load hits all alike
        for server in fleet:
            bar.update(1)
            proc = server.spawn()
            try:
                cold[server.name].append(wait_first_infer(server, bodies[1], proc))
            finally:
                stop(proc)
            time.sleep(0.5)
    print(f"cold starts: {cold}", file=sys.stderr, flush=True)
    # All servers up at once (an idle one costs no CPU), and every load level run on each in
    # turn: drifting machine load (other work on a shared machine) then hits all alike.
    procs = {}
    triton_refused: dict[str, str] = {}
    try:
        for server in fleet:
            procs[server.name] = proc = server.spawn()
            wait_first_infer(server, bodies[1], proc)
            check_predictions(server, model, X)
            results[server.name] = {"cold": cold[server.name], "memory": memory_mib(proc.pid), "load": {}}
            if "tritonclient" in clients and (refused := check_triton_predictions(server, model, X)):
                triton_refused[server.name] = refused
                print(f"{server.name} refuses tritonclient's defaults: {refused}", file=sys.stderr, flush=True)
        for client in clients:
            for rows, body in bodies.items():
                for c in levels:
                    for server in fleet:
                        url = f"{server.url}/v2/models/wine/infer"
                        if client == "wrk":
                            run_wrk(url, body, c, 2)  # warm connections and caches
                            result = run_wrk(url, body, c, args.duration)
                        elif server.name in triton_refused:
                            result = {"rps": None, "p50": None, "p99": None, "bad": 0, "socket_errors": ""}
                        else:
                            run_triton(server, arrays[rows], c, 2)
                            result = run_triton(server, arrays[rows], c, args.duration)
                        results[server.name]["load"][(client, rows, c)] = result
                        bar.update(1)
                        bar.write(f"  {server.name} {client} rows={rows} c={c}: {result}", file=sys.stderr)
        for server in fleet:
            results[server.name]["memory_after"] = memory_mib(procs[server.name].pid)
        bar.close()
    finally:
        for proc in procs.values():
            stop(proc)

    print_table(results, levels, list(bodies), clients)
    for name, refused in triton_refused.items():
        print(f"{name}: n/a with tritonclient's defaults, the first request was answered: {refused}")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")


CLIENT_LABELS = {"wrk": "JSON (wrk)", "tritonclient": "binary (tritonclient)"}


def print_table(results: dict, levels: list[int], row_counts: list[int], clients: list[str]) -> None:
    names = list(results)
    peers = [n for n in names if n.startswith("MLServer")]
    ours = [n for n in names if not n.startswith("MLServer")]
    ref = peers[0] if peers else names[0]

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}x" if b else "n/a"

    header = "| measure | " + " | ".join(names) + " | " + " | ".join(f"{o} / {ref}" for o in ours) + " |"
    print(header)
    print("|" + "---|" * (1 + len(names) + len(ours)))

    def row(label: str, values: dict[str, float | None], fmt: str) -> None:
        cells = [fmt.format(values[n]) if values[n] is not None else "n/a" for n in names]
        ratios = [ratio(values[o], values[ref]) if values[o] is not None and values[ref] is not None else "n/a"  # type: ignore[arg-type]
                  for o in ours]
        print(f"| {label} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")

    row("cold start, median s (spawn -> first V2 infer)", {n: statistics.median(r["cold"]) for n, r in results.items()}, "{:.2f}")
    row("cold start, min s", {n: min(r["cold"]) for n, r in results.items()}, "{:.2f}")
    for client in clients:
        label = CLIENT_LABELS[client]
        for rows in row_counts:
            for c in levels:
                load = {n: r["load"][(client, rows, c)] for n, r in results.items()}
                row(f"{label} {rows}-row req/s, c={c}", {n: v["rps"] for n, v in load.items()}, "{:.0f}")
                row(f"{label} {rows}-row p50 ms, c={c}", {n: v["p50"] for n, v in load.items()}, "{:.2f}")
                row(f"{label} {rows}-row p99 ms, c={c}", {n: v["p99"] for n, v in load.items()}, "{:.2f}")
    row("memory after load, RSS MiB (tree)", {n: r["memory"][0] for n, r in results.items()}, "{:.0f}")
    row("memory after load, PSS MiB (tree)", {n: r["memory"][1] for n, r in results.items()}, "{:.0f}")
    row("memory after the load runs, PSS MiB", {n: r["memory_after"][1] for n, r in results.items()}, "{:.0f}")
    bad = {n: sum(v["bad"] for v in r["load"].values()) for n, r in results.items()}
    print(f"\nnon-2xx (wrk) or failed (tritonclient) answers during load runs: {bad}")
    print("ratios: cold start, latency and memory lower is better; req/s higher is better")


if __name__ == "__main__":
    main()
