"""`make chaos`'s pool rows: the model pool (a real `python -m infer.serve --repository` process,
configured as serving/pool/infer-pool.yaml configures it: its env, its memory limit, its
concurrency limit) under hostile callers and operator mistakes, one fault after another.

Before the faults the pool is filled: every model of a repository of FILL copies of the example
models is loaded through the control port, so that loaded models hold the whole POOL_MEMORY_MB
when the faults come (the worst case for memory). The pod's memory is sampled every few ms as the
proportional set size (PSS) of its processes (gunicorn's master and worker share copy-on-write
pages: RSS would count them twice; a cgroup counts them once).

Faults:
- unload storm from a foreign host: two threads loop `POST /v2/repository/models/wine/unload`
  (and load) with `Host: diabetes.<ns>.<domain>` on the serving port while wine's own client
  sends its requests;
- model republished in place: wine's file is replaced by a new version (other bytes, same
  predictions) and the manifest's sha256 updated, while its client sends requests; the row says
  when the pool served the new bytes;
- oversized and deep inputs at the concurrency limit: CONCURRENCY hostile clients loop the worst
  bodies the limits allow (a 10 MiB JSON of nested empty lists, 2 MiB of it, CSV and binary
  UINT8 tensors at the body limit, 65 dimensions, shape [0, 2**62]) while wine's client sends
  its requests.

Per row: wine's requests, lost (not answered 200 after retrying 503s as Retry-After says, 5
tries), answered 500 (any client, hostile ones included), 503s (retryable), peak memory and the
manifest's limit. Must be: 0 lost, 0 answered 500, peak under the limit.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import requests
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from localmode.processes import free_port, stop, wait_until  # noqa: E402

MANIFEST = ROOT / "serving" / "pool" / "infer-pool.yaml"
FILL = 1200
CLIENT_REQUESTS = 300
HOST = "{}.models.example.com"


@dataclass
class PoolRow:
    fault: str
    requests: int
    lost: int
    answered_500: int
    retried_503: int
    peak_mib: float | None
    limit_mib: float | None
    note: str = ""
    routed_to_nothing: int | None = None
    """Model hosts left routed to no running Service (scripts/chaos_tiers.py's rows; None: no routes)."""
    missed: bool = False
    """The row's own guarantee missed (the note says which)."""


def pool_spec() -> tuple[dict[str, str], float, int]:
    """The pool container's env, memory limit (MiB) and concurrency limit, from the manifest."""
    (svc,) = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d and d.get("kind") == "Service"]
    spec = svc["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    env = {e["name"]: str(e["value"]) for e in container.get("env", []) if "value" in e}
    limit = container["resources"]["limits"]["memory"]
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", limit).groups()
    return env, float(number) * (1024 if unit == "Gi" else 1), int(spec.get("containerConcurrency") or 8)


class PssSampler:
    """Peak PSS of a process and its children, sampled every `period_s`."""

    def __init__(self, pid: int, period_s: float = 0.005):
        self.pid, self.period_s = pid, period_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def pids(self) -> list[int]:
        out = [self.pid]
        try:
            out += [int(p) for p in Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()]
        except OSError:
            pass
        return out

    def sample(self) -> int:
        total = 0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
            except OSError:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.sample())
            time.sleep(self.period_s)

    def __enter__(self) -> "PssSampler":
        self.peak = 0
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def make_repository(models: Path, out: Path, fill: int) -> Path:
    out.mkdir(parents=True)
    manifest = json.loads((models / "manifest.json").read_text())
    entries = [e for e in manifest["artifacts"] if e["format"] == "onnx"]
    for e in entries:
        shutil.copy(models / e["path"], out / e["path"])
    wine = next(e for e in entries if e["name"] == "wine")
    diabetes = next(e for e in entries if e["name"] == "diabetes")
    extra = [{**(wine if i % 2 else diabetes), "name": f"fill-{i:05d}"} for i in range(fill)]
    write_manifest(out, entries + extra)
    return out


def write_manifest(repo: Path, artifacts: list[dict]) -> None:
    tmp = repo / "manifest.json.tmp"
    tmp.write_text(json.dumps({"artifacts": artifacts}))
    os.replace(tmp, repo / "manifest.json")  # atomic, as a volume update is


class Client:
    """Wine's own client: V2 requests on wine's host, 503s retried as Retry-After says."""

    def __init__(self, url: str, body: dict):
        self.url, self.body = url, body
        self.requests = self.lost = self.status_500 = self.status_503 = 0
        self.session = requests.Session()

    def one(self) -> None:
        self.requests += 1
        for _ in range(5):
            try:
                r = self.session.post(f"{self.url}/v2/models/wine/infer", json=self.body, headers={"Host": HOST.format("wine")},
                                      timeout=30)
            except requests.RequestException:
                continue
            if r.status_code == 200:
                return
            self.status_500 += r.status_code == 500
            if r.status_code == 503:
                self.status_503 += 1
                time.sleep(float(r.headers.get("Retry-After", "1")) / 10)  # a patient client, compressed
                continue
            break
        self.lost += 1

    def run(self, n: int, pause_s: float = 0.01) -> None:
        for _ in range(n):
            self.one()
            time.sleep(pause_s)


def hostile_bodies(max_body: int) -> list[tuple[str, bytes, dict]]:
    import numpy as np

    def lists(size: int) -> bytes:
        head = b'{"inputs":[{"name":"x","shape":[1,13],"datatype":"FP64","data":[1,1,1,1,1,1,1,1,1,1,1,1,1]}],"parameters":{"j":['
        n = (size - len(head) - 4) // 3
        return head + b",".join([b"[]"] * n) + b"]}}"

    csv_row = b"1,1,1,1,1,1,1,1,1,1,1,1,1\n"
    csv = b"a,b,c,d,e,f,g,h,i,j,k,l,m\n" + csv_row * ((max_body - 30) // len(csv_row))
    rows = (max_body - 400) // 13
    header = json.dumps({"inputs": [{"name": "x", "shape": [rows, 13], "datatype": "UINT8",
                                     "parameters": {"binary_data_size": rows * 13}}]}).encode()
    binary = header + np.ones(rows * 13, dtype=np.uint8).tobytes()
    deep = json.dumps({"inputs": [{"name": "x", "shape": [1] * 65, "datatype": "FP64", "data": [0.0]}]}).encode()
    huge = json.dumps({"inputs": [{"name": "x", "shape": [0, 2**62], "datatype": "FP64", "data": []}]}).encode()
    json_h = {"Content-Type": "application/json"}
    small_rows = 2 * 2**20 // 13
    small_header = json.dumps({"inputs": [{"name": "x", "shape": [small_rows, 13], "datatype": "UINT8",
                                           "parameters": {"binary_data_size": small_rows * 13}}]}).encode()
    small_binary = small_header + np.ones(small_rows * 13, dtype=np.uint8).tobytes()
    octet = {"Content-Type": "application/octet-stream"}
    return [
        ("/v2/models/wine/infer", lists(max_body - 1024), json_h),
        ("/v2/models/wine/infer", lists(2**20), json_h),
        ("/invocations", csv, {"Content-Type": "text/csv"}),
        ("/v2/models/wine/infer", binary, {**octet, "Inference-Header-Content-Length": str(len(header))}),
        ("/v2/models/wine/infer", small_binary, {**octet, "Inference-Header-Content-Length": str(len(small_header))}),
        ("/v2/models/wine/infer", deep, json_h),
        ("/v2/models/wine/infer", huge, json_h),
    ]


class Hostile:
    def __init__(self, url: str, bodies: list, stop_event: threading.Event):
        self.url, self.bodies, self.stop_event = url, bodies, stop_event
        self.status_500 = self.sent = 0
        self.codes: dict[int, int] = {}

    def run(self, offset: int) -> None:
        session = requests.Session()
        i = offset
        while not self.stop_event.is_set():
            path, body, headers = self.bodies[i % len(self.bodies)]
            i += 1
            try:
                r = session.post(f"{self.url}{path}", data=body, headers={**headers, "Host": HOST.format("wine")}, timeout=60)
            except requests.RequestException:
                continue
            self.sent += 1
            self.codes[r.status_code] = self.codes.get(r.status_code, 0) + 1
            self.status_500 += r.status_code == 500


def start_pool(repo: Path, env: dict[str, str], threads: int, log: Path) -> tuple[subprocess.Popen, str, str]:
    port, control = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "infer.serve", "--repository", str(repo), "--port", str(port), "--threads", str(threads)],
        env={**os.environ, "PYTHONPATH": str(ROOT / "functions" / "infer"), "LOG_LEVEL": "INFO", **env,
             "MODEL_REPOSITORY": str(repo), "POOL_CONTROL_PORT": str(control), "POOL_REPOSITORY_POLL_SECONDS": "0.5"},
        stdout=log.open("ab"), stderr=subprocess.STDOUT)
    url, control_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{control}"
    wait_until(lambda: requests.get(url + "/v2/health/ready", timeout=1).status_code == 200, 60, "pool", proc)
    wait_until(lambda: requests.get(control_url + "/v2/health/ready", timeout=1).status_code == 200, 30, "control", proc)
    return proc, url, control_url


def run_pool_faults(models: Path, base: Path) -> list[PoolRow]:
    env, limit_mib, concurrency = pool_spec()
    repo = make_repository(models, base / "pool-repo", FILL)
    manifest = json.loads((repo / "manifest.json").read_text())
    wine = next(a for a in manifest["artifacts"] if a["name"] == "wine")
    body = {"inputs": [{"name": "input-0", "shape": [1, 13], "datatype": "FP64", "data": wine["example"][0]}]}
    proc, url, control = start_pool(repo, env, concurrency, base / "pool.log")
    rows = []
    try:
        sampler = PssSampler(proc.pid)
        with sampler:  # fill the budget: every model loaded once, least recently used out
            session = requests.Session()
            for entry in manifest["artifacts"]:
                session.post(f"{control}/v2/repository/models/{entry['name']}/load", timeout=30)
            fill_peak = sampler.peak
        used = _metric(url, "infer_pool_memory_used_bytes")
        print(f"  pool filled: {used / 2**20:.0f} MiB of models charged, peak {fill_peak / 2**20:.0f} MiB", file=sys.stderr)

        # -- unload storm from a foreign host ------------------------------------------------
        client = Client(url, body)
        client.one()
        loads_before = _metric(url, "infer_pool_model_loads_total", model="wine", outcome="loaded")
        done = threading.Event()
        storm = {"sent": 0, "not_404": 0}

        def unload_storm() -> None:
            s = requests.Session()
            while not done.is_set():
                for verb in ("unload", "load"):
                    r = s.post(f"{url}/v2/repository/models/wine/{verb}", headers={"Host": HOST.format("diabetes")}, timeout=10)
                    storm["sent"] += 1
                    storm["not_404"] += r.status_code != 404
        with sampler:
            threads = [threading.Thread(target=unload_storm, daemon=True) for _ in range(2)]
            for t in threads:
                t.start()
            client.run(CLIENT_REQUESTS)
            done.set()
            for t in threads:
                t.join()
        reloads = _metric(url, "infer_pool_model_loads_total", model="wine", outcome="loaded") - loads_before
        rows.append(PoolRow("unload storm from a foreign host", client.requests, client.lost, client.status_500,
                            client.status_503, sampler.peak / 2**20, limit_mib,
                            f"{storm['sent']} unload/load calls, {storm['not_404']} not 404; wine reloaded {reloads:.0f}x"))

        # -- model republished in place ------------------------------------------------------
        client = Client(url, body)
        new_sha = _republish(repo, "wine")
        with sampler:
            started = time.monotonic()
            served_new = None
            for i in range(CLIENT_REQUESTS):
                client.one()
                if served_new is None and _serves(control, "wine", new_sha, base / "pool.log"):
                    served_new = time.monotonic() - started
                time.sleep(0.01)
        rows.append(PoolRow("model republished in place", client.requests, client.lost, client.status_500,
                            client.status_503, sampler.peak / 2**20, limit_mib,
                            f"new version served after {served_new:.1f} s" if served_new is not None
                            else "new version NOT served"))

        # -- oversized and deep inputs at the concurrency limit -------------------------------
        client = Client(url, body)
        done = threading.Event()
        hostile = Hostile(url, hostile_bodies(int(env.get("MAX_BODY_BYTES", 10 * 2**20))), done)
        with sampler:
            threads = [threading.Thread(target=hostile.run, args=(i,), daemon=True) for i in range(concurrency)]
            for t in threads:
                t.start()
            client.run(CLIENT_REQUESTS, pause_s=0.05)
            done.set()
            for t in threads:
                t.join()
        codes = ", ".join(f"{k}: {v}" for k, v in sorted(hostile.codes.items()))
        rows.append(PoolRow(f"oversized and deep inputs, {concurrency} at once", client.requests, client.lost,
                            client.status_500 + hostile.status_500, client.status_503, sampler.peak / 2**20, limit_mib,
                            f"{hostile.sent} hostile requests ({codes})"))
    finally:
        stop(proc)
    return rows


def _metric(url: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(f"{url}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def _republish(repo: Path, name: str) -> str:
    """A new version of the model's file (other bytes, same graph) and the manifest's sha256."""
    import hashlib

    import onnx

    manifest = json.loads((repo / "manifest.json").read_text())
    entry = next(a for a in manifest["artifacts"] if a["name"] == name)
    model = onnx.load(str(repo / entry["path"]))
    model.doc_string = f"republished {time.time()}"
    data = model.SerializeToString()
    tmp = repo / (entry["path"] + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, repo / entry["path"])
    entry["sha256"] = hashlib.sha256(data).hexdigest()
    write_manifest(repo, manifest["artifacts"])
    return entry["sha256"]


def _serves(control: str, name: str, sha: str, log: Path) -> bool:
    """Whether the pool has loaded `sha` for `name` (its "pool model loaded" log line)."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return False
    return f'"sha256": "{sha}"' in text or f'"sha256":"{sha}"' in text


def print_pool_rows(rows: list[PoolRow]) -> bool:
    print("\n| pool fault | model requests | lost | answered 500 | 503 retried | peak memory (MiB) | limit (MiB) "
          "| URLs routed to nothing | notes |")
    print("|---|---|---|---|---|---|---|---|---|")

    def cell(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.0f}"

    for r in rows:
        print(f"| {r.fault} | {r.requests} | {r.lost} | {r.answered_500} | {r.retried_503} | {cell(r.peak_mib)} | "
              f"{cell(r.limit_mib)} | {cell(r.routed_to_nothing)} | {r.note} |")
    return all(r.lost == 0 and r.answered_500 == 0 and not r.routed_to_nothing and not r.missed
               and (r.peak_mib is None or r.peak_mib < r.limit_mib) for r in rows)


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory(prefix="chaos-pool-") as tmp:
        from scripts.chaos_tiers import run_tier_faults

        rows = [] if "--tiers-only" in sys.argv else run_pool_faults(ROOT / "models", Path(tmp))
        ok = print_pool_rows(rows + run_tier_faults(ROOT / "models", Path(tmp)))
        if "--keep" in sys.argv:
            shutil.copytree(tmp, ROOT / "reports" / "chaos-pool", dirs_exist_ok=True)
    print("\npool guarantees held" if ok else "\npool guarantees broken")
    sys.exit(0 if ok else 1)
