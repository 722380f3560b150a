"""Run mypy (mypy.ini) over each function as func builds it: from its own directory, its shim
(`function`), its package and its generated copy of fncommon. One run per function, each with a
cache of its own, since all four shims are the package `function`. Exit status: mypy's worst."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS = ("deadletter", "forecast", "infer", "scale")


def check(function: str, root: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """mypy over one function directory under `root` (its mypy.ini, its own cache)."""
    directory = root / "functions" / function
    env = {**os.environ, "PYTHONPATH": str(directory)}
    env.pop("MYPYPATH", None)
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(root / "mypy.ini"),
         "--cache-dir", str(root / ".mypy_cache" / function), "-p", "function", "-p", function, "-p", "fncommon"],
        cwd=directory, env=env, capture_output=True, text=True)


def main(argv: list[str]) -> int:
    worst = 0
    for function in argv or FUNCTIONS:
        result = check(function)
        print(f"== {function}: {result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr.strip()}")
        if result.returncode:
            print(result.stdout, end="")
        worst = max(worst, result.returncode)
    return worst


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
