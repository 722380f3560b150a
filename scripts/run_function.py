"""Run a function directory under func-python's own server, as `func run --builder=host` does:
import its `function` package and serve `new` with the HTTP or CloudEvents middleware that its
func.yaml `invoke` names. Listens on LISTEN_ADDRESS (func-python's variable), e.g. 127.0.0.1:8080.

    python scripts/run_function.py functions/infer
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml


def main() -> None:
    directory = Path(sys.argv[1]).resolve()
    invoke = (yaml.safe_load((directory / "func.yaml").read_text()) or {}).get("invoke", "http")
    sys.path.insert(0, str(directory))
    import function  # the function's own shim package, found first on the path

    if invoke == "cloudevent":
        from func_python.cloudevent import serve
    else:
        from func_python.http import serve
    serve(function.new)


if __name__ == "__main__":
    main()
