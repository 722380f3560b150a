"""The type checker holds over every function, checked as each is built (its own directory, its
shim, its package, its copy of fncommon), with a configuration that catches what it should."""

from __future__ import annotations

import importlib.util
import shutil

from tests.support.servers import ROOT

_spec = importlib.util.spec_from_file_location("typecheck", ROOT / "scripts" / "typecheck.py")
assert _spec is not None and _spec.loader is not None
typecheck = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(typecheck)


def test_mypy_finds_no_error_in_any_function():
    for function in typecheck.FUNCTIONS:
        result = typecheck.check(function)
        assert result.returncode == 0, f"{function}:\n{result.stdout[-4000:]}{result.stderr[-2000:]}"
        assert "Success: no issues found" in result.stdout


def test_the_configuration_catches_a_wrong_type_and_an_untyped_shared_function(tmp_path):
    shutil.copy(ROOT / "mypy.ini", tmp_path / "mypy.ini")
    shutil.copytree(ROOT / "functions" / "deadletter", tmp_path / "functions" / "deadletter",
                    ignore=shutil.ignore_patterns("__pycache__"))
    with (tmp_path / "functions" / "deadletter" / "deadletter" / "sink.py").open("a") as f:
        f.write("\n\ndef _kept(count: int) -> str:\n    return count\n")
    with (tmp_path / "functions" / "deadletter" / "fncommon" / "json_log.py").open("a") as f:
        f.write("\n\ndef _untyped(line):\n    return line\n")
    result = typecheck.check("deadletter", tmp_path)
    assert result.returncode == 1
    assert 'deadletter/sink.py' in result.stdout and "[return-value]" in result.stdout
    assert "fncommon/json_log.py" in result.stdout and "[no-untyped-def]" in result.stdout
