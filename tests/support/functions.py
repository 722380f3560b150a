"""Run a function directory the way `func run --builder=host` does: func-python's own server
around the function's `new()`, in a separate process whose import path holds that directory only
(so a function that imported a sibling or training/ would fail here, as it would in its image)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import requests

from localmode.processes import free_port, stop, wait_until
from tests.support.servers import ROOT

RUNNER = ROOT / "scripts" / "run_function.py"


@dataclass
class RunningFunction:
    url: str
    process: subprocess.Popen
    log: Path

    def stop(self) -> None:
        stop(self.process)

    def log_lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()


def start_function(name: str, env: dict[str, str], log: Path, wait_ready: bool = True) -> RunningFunction:
    directory = ROOT / "functions" / name
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(RUNNER), str(directory)],
        env={**os.environ, "LISTEN_ADDRESS": f"127.0.0.1:{port}", "PYTHONPATH": str(directory), **env},
        stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    probe = "/health/readiness" if wait_ready else "/health/liveness"
    wait_until(lambda: requests.get(url + probe, timeout=1).status_code == 200, 60, f"{name} function", proc)
    return RunningFunction(url, proc, log)
