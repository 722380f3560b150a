"""The declared layering (.importlinter) holds: functions stand alone, nothing imports tests/, the
math imports no adapter. Run with the real import-linter over the real tree."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.servers import ROOT


def test_the_import_contracts_are_kept():
    paths = [ROOT / "functions" / name for name in ("infer", "forecast", "scale", "deadletter")] + [ROOT]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, paths))}
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), str(ROOT / ".importlinter")], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout
