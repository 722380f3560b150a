"""Real servers for tests: Redis, Prometheus and the infer server, each started on a free
loopback port and stopped afterwards. Nothing here is a mock."""

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
from typing import Callable, Iterator

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"


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


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _binary(name: str) -> str:
    found = shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.path.exists(p)), None)
    if found is None:
        raise RuntimeError(f"{name} is not installed: run `make test`, which installs it")
    return found


@dataclass
class RedisServer:
    port: int
    url: str
    process: subprocess.Popen


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    port = free_port()
    data = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [_binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(data)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )

    def ping() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")

    wait_until(ping, 15, "redis-server", proc)
    yield RedisServer(port, f"redis://127.0.0.1:{port}/0", proc)
    stop(proc)


@dataclass
class PrometheusServer:
    port: int
    url: str
    data_dir: Path
    process: subprocess.Popen


@pytest.fixture(scope="session")
def prometheus_server(tmp_path_factory) -> Iterator[PrometheusServer]:
    port = free_port()
    base = tmp_path_factory.mktemp("prometheus")
    config = base / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 15s\nscrape_configs: []\n")
    proc = subprocess.Popen(
        [_binary("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={base / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=100y"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: requests.get(f"{url}/-/ready", timeout=1).status_code == 200, 30, "prometheus", proc)
    yield PrometheusServer(port, url, base / "data", proc)
    stop(proc)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    """The example models, trained once per session exactly as `make models` trains them."""
    from training.train_models import publish

    out = tmp_path_factory.mktemp("models")
    publish(out)
    return out


@dataclass
class InferServer:
    url: str
    process: subprocess.Popen
    log: Path


@pytest.fixture(scope="session")
def infer_server_factory(tmp_path_factory) -> Iterator[Callable[..., InferServer]]:
    """Start `python -m infer.serve` (gunicorn) processes; all are stopped at session end."""
    started: list[InferServer] = []

    def start(model: Path, env: dict[str, str] | None = None, workers: int = 2, wait_ready: bool = True) -> InferServer:
        port = free_port()
        log = tmp_path_factory.mktemp("infer") / "server.log"
        full_env = {**os.environ, "PYTHONPATH": f"{ROOT / 'functions' / 'infer'}", **(env or {})}
        full_env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        proc = subprocess.Popen(
            [sys.executable, "-m", "infer.serve", "--model", str(model), "--port", str(port),
             "--workers", str(workers)],
            env=full_env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        probe = "/v2/health/ready" if wait_ready else "/v2/health/live"
        wait_until(lambda: requests.get(url + probe, timeout=1).status_code == 200, 60, "infer server", proc)
        server = InferServer(url, proc, log)
        started.append(server)
        return server

    yield start
    for server in started:
        stop(server.process)
