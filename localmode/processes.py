"""Start and stop the real servers local mode runs on: Redis and Prometheus (Debian packages),
each on a free loopback port. Nothing here is a mock."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before it was up")
        try:
            if check():
                return
        except (OSError, requests.RequestException):
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{what} was not up within {timeout} s")


def stop(proc: subprocess.Popen, timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def binary(name: str) -> str:
    found = shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.path.exists(p)), None)
    if found is None:
        raise RuntimeError(f"{name} is not installed: run `make test` or `make demo`, which install it")
    return found


@dataclass
class Server:
    port: int
    url: str
    process: subprocess.Popen
    base: Path

    def stop(self) -> None:
        stop(self.process)


def start_redis(base: Path, port: int | None = None) -> Server:
    port = port or free_port()
    base.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(base)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )

    def ping() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")

    wait_until(ping, 15, "redis-server", proc)
    return Server(port, f"redis://127.0.0.1:{port}/0", proc, base)


def start_prometheus(base: Path, scrape_targets: list[str] | None = None, port: int | None = None,
                     scrape_interval_s: float = 15, job: str = "local") -> Server:
    """Prometheus on `base/data` (back-fill it before starting), logging every query it answers
    to `base/queries.log` (the tests count range queries there), scraping `scrape_targets` as
    the scrape job `job` (the forecast function's heartbeat requires that job's `up`)."""
    port = port or free_port()
    base.mkdir(parents=True, exist_ok=True)
    config = base / "prometheus.yml"
    interval = f"{int(scrape_interval_s * 1000)}ms"
    lines = [f"global:\n  scrape_interval: {interval}\n  query_log_file: {base / 'queries.log'}\n",
             "scrape_configs:\n"]
    if scrape_targets:
        lines.append(f"  - job_name: {job}\n    scrape_interval: {interval}\n    scrape_timeout: {interval}\n    static_configs:\n"
                     f"      - targets: [{', '.join(repr(t) for t in scrape_targets)}]\n")
    else:
        lines[-1] = "scrape_configs: []\n"
    config.write_text("".join(lines))
    proc = subprocess.Popen(
        [binary("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={base / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=100y",
         "--web.enable-lifecycle"],
        stdout=(base / "prometheus.log").open("ab"), stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: requests.get(f"{url}/-/ready", timeout=1).status_code == 200, 60, "prometheus", proc)
    return Server(port, url, proc, base)


def start_function(directory: Path, env: dict[str, str], log: Path, port: int | None = None,
                   probe: str = "/health/readiness", timeout: float = 60) -> tuple[str, subprocess.Popen]:
    """Run a function directory as `func run --builder=host` does (scripts/run_function.py:
    func-python's own server) with only that directory on the import path, and wait for `probe`."""
    port = port or free_port()
    root = Path(__file__).resolve().parents[1]
    process = subprocess.Popen(
        [sys.executable, str(root / "scripts" / "run_function.py"), str(directory)],
        env={**os.environ, "LISTEN_ADDRESS": f"127.0.0.1:{port}", "PYTHONPATH": str(directory), **env},
        stdout=log.open("ab"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: requests.get(url + probe, timeout=1).status_code == 200, timeout, directory.name, process)
    return url, process
