"""Every function directory builds on its own into a wheel that holds its shim and its logic
package (hatchling packages only `function/` unless told), and its func.yaml is valid."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

from tests.support.manifests import validate_func_yaml
from tests.support.servers import ROOT

FUNCTIONS = {
    "infer": ("http", ["infer/app.py", "infer/protocol_v2.py"]),
    "forecast": ("cloudevent", ["forecast/tick.py", "forecast/forecaster.py", "forecast/history_cache.py"]),
    "scale": ("cloudevent", ["scale/min_scale_policy.py", "scale/scaler.py", "scale/knative_api.py"]),
    "deadletter": ("cloudevent", ["deadletter/sink.py"]),
}


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_wheel_contains_shim_and_logic_package(name, tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
         str(ROOT / "functions" / name)],
        check=True,
    )
    (wheel,) = tmp_path.glob("function-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "function/func.py" in names
    for module in FUNCTIONS[name][1]:
        assert module in names


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_func_yaml_is_valid_against_the_func_schema(name):
    doc = validate_func_yaml(ROOT / "functions" / name / "func.yaml")
    assert doc["runtime"] == "python" and doc["invoke"] == FUNCTIONS[name][0]


CLOUDEVENT_FUNCTIONS = ("forecast", "scale", "deadletter")


ALL_FUNCTIONS = CLOUDEVENT_FUNCTIONS + ("infer",)
BUILD_FORCED_COPIES = {
    "http_guard.py": CLOUDEVENT_FUNCTIONS,
    "cloudevent_io.py": CLOUDEVENT_FUNCTIONS,
    "json_log.py": ALL_FUNCTIONS,  # the one log format of all four functions, the infer server included
    "env_settings.py": ALL_FUNCTIONS,  # the one way configuration is read
    "verified_file.py": ("forecast", "infer"),  # the one gate before an artifact loads
    "metrics_server.py": ("forecast", "scale"),  # the functions' /metrics on METRICS_PORT
}


@pytest.mark.parametrize("module", sorted(BUILD_FORCED_COPIES))
def test_the_build_forced_copies_are_byte_identical(module):
    """Each function is built from its own directory, so these shared modules are copies."""
    copies = {name: (ROOT / "functions" / name / name / module).read_bytes() for name in BUILD_FORCED_COPIES[module]}
    assert len(set(copies.values())) == 1, f"functions/*/*/{module} drifted apart: make them identical"
