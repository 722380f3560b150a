"""The model pool's worst-case memory, one kind of stranger call at a time: the pool process as
serving/pool/infer-pool.yaml configures it (env, memory limit, containerConcurrency), its
budget filled with loaded models first (scripts/chaos_pool.py's repository of FILL copies), then
`containerConcurrency` clients loop one kind of call for SECONDS while the pool's PSS is sampled
every 5 ms (its processes' proportional set size: what the pod's cgroup is charged, counted once).

Kinds: a foreign host (wine's V2 request on diabetes' host), the repository API from a model host
(unload / load on the serving port), the largest body the limit allows as JSON (nested empty
lists), binary (UINT8 tensor) and CSV (`/invocations`), the deepest shapes (65 dimensions,
[0, 2**62]), and all of them mixed. Prints a Markdown table: requests, status codes, answered
500, peak PSS and its share of the manifest's limit. A script, not a test: the figures depend on
the machine (allocator, Python build); the guarantee (peak under the limit, no 500) is what
`make chaos` checks.

    python scripts/worst_case_memory.py [SECONDS]
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from localmode.processes import stop  # noqa: E402
from scripts.chaos_pool import (HOST, FILL, PssSampler, hostile_bodies, make_repository, pool_spec,  # noqa: E402
                                start_pool)

SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0


def kinds(max_body: int, wine_row: list[float]) -> list[tuple[str, list[tuple[str, bytes, dict, str]]]]:
    """(kind, [(path, body, headers, host model)]): each client cycles through its kind's calls."""
    json_h = {"Content-Type": "application/json"}
    small = json.dumps({"inputs": [{"name": "input-0", "shape": [1, 13], "datatype": "FP64", "data": wine_row}]}).encode()
    bodies = hostile_bodies(max_body)
    json_big, _, csv, binary, _, deep, huge = bodies
    return [
        ("foreign host (wine's request on diabetes' host)", [("/v2/models/wine/infer", small, json_h, "diabetes")]),
        ("repository API from a model host (unload, load)",
         [("/v2/repository/models/wine/unload", b"{}", json_h, "diabetes"),
          ("/v2/repository/models/wine/load", b"{}", json_h, "diabetes")]),
        (f"largest JSON body ({len(json_big[1]) / 2**20:.1f} MiB of nested lists)", [(*json_big, "wine")]),
        (f"largest binary body ({len(binary[1]) / 2**20:.1f} MiB UINT8)", [(*binary, "wine")]),
        (f"largest CSV body ({len(csv[1]) / 2**20:.1f} MiB, /invocations)", [(*csv, "wine")]),
        ("deepest shapes (65 dimensions; [0, 2**62])", [(*deep, "wine"), (*huge, "wine")]),
        ("all of the above, mixed", [(*b, "wine") for b in bodies]),
    ]


def hammer(url: str, calls: list[tuple[str, bytes, dict, str]], clients: int, seconds: float) -> dict[int | str, int]:
    codes: dict[int | str, int] = {}
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def run(offset: int) -> None:
        session = requests.Session()
        i = offset
        while time.monotonic() < deadline:
            path, body, headers, model = calls[i % len(calls)]
            i += 1
            try:
                code: int | str = session.post(f"{url}{path}", data=body, headers={**headers, "Host": HOST.format(model)},
                                               timeout=60).status_code
            except requests.RequestException as exc:
                code = type(exc).__name__
            with lock:
                codes[code] = codes.get(code, 0) + 1

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return codes


def main() -> None:
    env, limit_mib, concurrency = pool_spec()
    max_body = int(env.get("MAX_BODY_BYTES", 10 * 2**20))
    with tempfile.TemporaryDirectory(prefix="worst-case-memory-") as tmp:
        base = Path(tmp)
        repo = make_repository(ROOT / "models", base / "repo", FILL)
        manifest = json.loads((repo / "manifest.json").read_text())
        wine = next(a for a in manifest["artifacts"] if a["name"] == "wine")
        proc, url, control = start_pool(repo, env, concurrency, base / "pool.log")
        try:
            sampler = PssSampler(proc.pid)
            with sampler:
                session = requests.Session()
                for entry in manifest["artifacts"]:
                    session.post(f"{control}/v2/repository/models/{entry['name']}/load", timeout=30)
            filled = sampler.sample() / 2**20
            print(f"pool: {len(manifest['artifacts'])} models in the repository, budget filled; PSS at rest "
                  f"{filled:.0f} MiB; limit {limit_mib:.0f} MiB; {concurrency} clients at once; {SECONDS:.0f} s per kind;"
                  f" MAX_BODY_BYTES {max_body}; REQUEST_MEMORY_MB {env.get('REQUEST_MEMORY_MB', 'default')}; "
                  f"POOL_MEMORY_MB {env.get('POOL_MEMORY_MB')}\n")
            print("| stranger call | requests | status codes | answered 500 | peak PSS (MiB) | of the limit |")
            print("|---|---|---|---|---|---|")
            worst = 0.0
            for kind, calls in kinds(max_body, [float(x) for x in wine["example"][0]]):
                with sampler:
                    codes = hammer(url, calls, concurrency, SECONDS)
                peak = sampler.peak / 2**20
                worst = max(worst, peak)
                seen = ", ".join(f"{k}: {v}" for k, v in sorted(codes.items(), key=lambda kv: str(kv[0])))
                print(f"| {kind} | {sum(codes.values())} | {seen} | {codes.get(500, 0)} | {peak:.0f} | "
                      f"{peak / limit_mib:.0%} |", flush=True)
            print(f"\nworst peak {worst:.0f} MiB of {limit_mib:.0f} MiB ({worst / limit_mib:.0%}); "
                  f"headroom {limit_mib - worst:.0f} MiB")
        finally:
            stop(proc)


if __name__ == "__main__":
    main()
