"""Real servers for tests: Redis, Prometheus and the infer server, each started on a free
loopback port and stopped afterwards. Nothing here is a mock."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest
import redis
import requests

from localmode.processes import Server, free_port, start_prometheus, start_redis, stop, wait_until

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[Server]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_db(redis_server) -> str:
    """A Redis database of the session's server, emptied for each test (tests run one at a time)."""
    url = f"redis://127.0.0.1:{redis_server.port}/1"
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture(scope="session")
def prometheus_server(tmp_path_factory) -> Iterator[Server]:
    server = start_prometheus(tmp_path_factory.mktemp("prometheus"))
    yield server
    server.stop()


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
        from training.publish_model import pinned_env

        # the publish step pins the digest in the server's environment (MODEL_SHA256)
        full_env = {**os.environ, "PYTHONPATH": f"{ROOT / 'functions' / 'infer'}", **pinned_env(model), **(env or {})}
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
