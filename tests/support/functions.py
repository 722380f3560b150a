"""Run a function directory the way `func run --builder=host` does: func-python's own server
around the function's `new()`, in a separate process whose import path holds that directory only
(so a function that imported a sibling or training/ would fail here, as it would in its image)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from localmode.processes import start_function as run_function_dir
from localmode.processes import stop
from tests.support.servers import ROOT


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
    probe = "/health/readiness" if wait_ready else "/health/liveness"
    url, process = run_function_dir(ROOT / "functions" / name, env, log, probe=probe)
    return RunningFunction(url, process, log)
