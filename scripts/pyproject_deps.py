"""Print the runtime dependencies of the given pyproject.toml files, one per line, so that the
project venv installs exactly the ranges each function pins (they cannot be pip-installed side by
side: every Knative Python function's distribution is named `function`)."""

import sys
import tomllib

for path in sys.argv[1:]:
    with open(path, "rb") as f:
        for requirement in tomllib.load(f)["project"].get("dependencies", []):
            print(requirement)
