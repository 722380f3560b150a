"""Writes docs/reference/settings.md from the settings code: every environment variable each
function reads, with the default and the rule the code applies, and the policy knob table.

Why generated: a hand-kept table drifts from the code (the README's said `/models/forecaster`
while the code reads `models/forecaster` relative to the package). So the names, defaults and
rules come from the source itself: every call of the env_settings helpers (`text`, `whole`,
`number`, `flag`, `names`, `optional`, `sha256`) and every `.get("NAME", default)` on an
environment mapping, found by reading each function's code (nothing is imported or run except
the policy knob table). What a variable means comes from the documentation kept beside the code:
the `| NAME | default | meaning |` tables in module and class docstrings, and the dataclass
attribute docstrings that start with the variable's name (`MODEL_ROOT (default ./models). ...`).
A variable the code reads that no docstring explains fails the generator: document it there.

    python scripts/gen_settings_reference.py          # write the page
    python scripts/gen_settings_reference.py --check  # exit 1 when the committed page differs
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "reference" / "settings.md"
NAME = re.compile(r"^[A-Z][A-Z0-9_]{2,}$")  # an environment variable's name, as the code spells it
HELPERS = {"text": "text", "whole": "integer", "number": "number", "flag": "true / false",
           "names": "comma-separated list", "optional": "text (unset: none)", "sha256": "64 hex digits"}

# (section title, anchor-friendly title, function directory)
FUNCTIONS = (
    ("Forecast function", "forecast"),
    ("Scale function", "scale"),
    ("Inference server", "infer"),
    ("Dead-letter sink", "deadletter"),
)

# Variables read by code every function shares (the shim, the HTTP guard, the server launcher)
# whose meaning no settings docstring holds: said once here.
SHARED_MEANINGS = {
    "LOG_LEVEL": "log level of the JSON log lines (`DEBUG`, `INFO`, `WARNING`, ...)",
    "MAX_EVENT_BYTES": "a request body larger than this is refused (413) before it is buffered whole "
                       "(`http_guard.py` wraps func-python's body reader)",
    "HOST": "standalone server (`python -m infer.serve`): the address it binds",
    "PORT": "standalone server: the port it serves on",
    "WEB_CONCURRENCY": "standalone server: gunicorn worker processes (a model pool always runs one)",
    "GUNICORN_THREADS": "standalone server: threads per gunicorn worker (the pool: 4 per CPU unless set)",
    "WORKER_TMP_DIR": "standalone server: where gunicorn keeps its worker heartbeat files (a writable "
                      "emptyDir under a read-only root file system)",
    "PROMETHEUS_MULTIPROC_DIR": "standalone server with several workers: prometheus-client's multiprocess "
                                "directory, so that a scrape sums the workers (a temporary one when unset)",
}


@dataclass
class Read:
    name: str
    kinds: set[str] = field(default_factory=set)
    defaults: set[str] = field(default_factory=set)
    rules: set[str] = field(default_factory=set)
    files: set[str] = field(default_factory=set)


CONSTANTS: dict[tuple[str, str], tuple[ast.AST, str]] = {}
"""Module-level constants and dataclass field defaults of the function being read, with their
file's source, by (module, name) or (class:<file>, field): `http_guard.MAX_BYTES`, `cls.control_url`."""


def collect_constants(path: Path) -> None:
    source = path.read_text()
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            CONSTANTS[(path.stem, node.targets[0].id)] = (node.value, source)
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name) and item.value is not None:
                    CONSTANTS[(f"class:{path}", item.target.id)] = (item.value, source)


def _value(node: ast.AST | None, source: str, path: Path | None = None) -> str | None:
    """A default as the page shows it: evaluated when it is a constant expression (`7 * 86400`),
    looked up when it names a constant (`http_guard.MAX_BYTES`, `cls.control_url`), else the
    code that computes it."""
    if node is None:
        return None
    if path is not None and isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        key = (f"class:{path}", node.attr) if node.value.id == "cls" else (node.value.id, node.attr)
        if key in CONSTANTS:
            return _value(*CONSTANTS[key])
    if not any(isinstance(n, (ast.Name, ast.Attribute, ast.Call)) for n in ast.walk(node)):
        try:
            value = eval(compile(ast.Expression(node), "<default>", "eval"), {"__builtins__": {}})  # constants only
        except Exception:  # noqa: BLE001 - shown as code instead
            value = None
        else:
            if isinstance(value, str):
                return f"`{value}`" if value else "(empty)"
            if isinstance(value, bool):
                return str(value).lower()
            if isinstance(value, float) and value.is_integer():
                return str(int(value))
            return str(value)
    return f"`{ast.get_source_segment(source, node)}`"


def _argument(call: ast.Call, position: int, keyword: str) -> ast.AST | None:
    if len(call.args) > position:
        return call.args[position]
    return next((k.value for k in call.keywords if k.arg == keyword), None)


def _is_environment(receiver: ast.AST) -> bool:
    """`env.get`, `cfg.get`, `os.environ.get`; not a WSGI request's `environ.get`."""
    if isinstance(receiver, ast.Attribute):
        return receiver.attr == "environ" and getattr(receiver.value, "id", None) == "os"
    return getattr(receiver, "id", None) in ("env", "cfg", "config", "environment")


def reads_in(path: Path, found: dict[str, Read]) -> None:
    source = path.read_text()
    tree = ast.parse(source)
    parents = {id(child): node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        callee = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
        if callee in HELPERS and len(node.args) >= 2:
            name_node, default_node = node.args[1], _argument(node, 2, "default")
            kind = HELPERS[callee]
        elif callee == "get" and node.args and _is_environment(node.func.value):
            name_node, default_node, kind = node.args[0], _argument(node, 1, "default"), "text"
        else:
            continue
        if not (isinstance(name_node, ast.Constant) and isinstance(name_node.value, str) and NAME.match(name_node.value)):
            continue
        read = found.setdefault(name_node.value, Read(name_node.value))
        read.kinds.add(kind)
        read.files.add(str(path.relative_to(ROOT)))
        parent = parents.get(id(node))
        if default_node is None and isinstance(parent, ast.BoolOp) and isinstance(parent.op, ast.Or) and parent.values[0] is node:
            default_node = parent.values[1]  # `env.get("X") or DEFAULT`, `optional(env, "X") or cls.default`
        default = _value(default_node, source, path)
        if default is None and (callee in ("optional", "sha256") or callee == "get"):
            default = "(unset)"
        if default is not None:
            read.defaults.add(default)
        if callee in ("whole", "number"):
            minimum = _value(_argument(node, 3, "minimum"), source)
            if minimum is not None and minimum != "None":
                read.rules.add(f">= {minimum}")
            positive = next((k.value for k in node.keywords if k.arg == "positive"), None)
            if isinstance(positive, ast.Constant) and positive.value:
                read.rules.add("> 0")
        if callee == "names" and any(k.arg == "allow_empty" and getattr(k.value, "value", False) for k in node.keywords):
            read.rules.add("may be empty")


def meanings_in(path: Path, meanings: dict[str, str]) -> None:
    """The documentation kept beside the code: docstring tables and attribute docstrings."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if not isinstance(body, list):
            continue
        docstring = ast.get_docstring(node, clean=True) if isinstance(
            node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) else None
        for line in (docstring or "").splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) >= 3 and line.strip().startswith("|"):
                for name in re.findall(r"[A-Z][A-Z0-9_]+", cells[0]):
                    if NAME.match(name):
                        meanings.setdefault(name, cells[-1])
        for before, after in zip(body, body[1:]):  # attribute docstrings: `field: T = x` then "NAME (...). text"
            if isinstance(before, ast.AnnAssign) and isinstance(after, ast.Expr) and isinstance(
                    getattr(after, "value", None), ast.Constant) and isinstance(after.value.value, str):
                text = " ".join(after.value.value.split())
                match = re.match(r"([A-Z][A-Z0-9_]+) \((.*?)\)[.:]\s*(.*)", text)
                if match and NAME.match(match[1]):
                    note = "" if match[2].startswith("default") else f"({match[2]}) "
                    meanings.setdefault(match[1], note + match[3])


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


GENERATED = "GENERATED by `make vendor`"


def used(files: list[Path]) -> list[Path]:
    """The function's own files, and of the shared modules vendored into it (`make vendor`'s
    generated copies) those its own code imports: a function that carries the metrics listener's
    copy but never starts it does not read METRICS_PORT."""
    own = [p for p in files if GENERATED not in p.read_text()[:300]]
    text = "\n".join(p.read_text() for p in own)
    shared = [p for p in files if p not in own and re.search(rf"\b{re.escape(p.stem)}\b", text)]
    return own + shared


def function_table(directory: str, shared: dict[str, str]) -> str:
    base = ROOT / "functions" / directory
    files = sorted(p for p in base.rglob("*.py") if ".venv" not in p.parts and "models" not in p.parts)
    found: dict[str, Read] = {}
    meanings: dict[str, str] = {}
    CONSTANTS.clear()
    for path in files:
        collect_constants(path)
    for path in used(files):
        reads_in(path, found)
        meanings_in(path, meanings)
    deployed = func_yaml_envs(base / "func.yaml")
    unread = sorted(set(deployed) - set(found) - KNOB_ENVS)
    if unread:
        raise SystemExit(f"functions/{directory}/func.yaml sets {', '.join(unread)}, which no code of the function reads")
    rows = ["| variable | default | `func.yaml` sets | rule | meaning |", "|---|---|---|---|---|"]
    missing = []
    for name in sorted(found):
        read = found[name]
        meaning = meanings.get(name) or shared.get(name) or SHARED_MEANINGS.get(name)
        if not meaning:
            missing.append(f"{name} ({', '.join(sorted(read.files))})")
            continue
        default = " / ".join(sorted(read.defaults)) or "(unset)"
        kinds = read.kinds - {"text"} if len(read.kinds) > 1 else read.kinds
        rule = ", ".join(sorted(kinds) + sorted(read.rules))
        value = f"`{deployed[name]}`" if name in deployed else ""
        rows.append(f"| `{name}` | {_cell(default)} | {_cell(value)} | {rule} | {_cell(meaning)} |")
    if missing:
        raise SystemExit(f"functions/{directory}: no docstring says what these mean: {'; '.join(missing)}")
    return "\n".join(rows)


KNOB_ENVS = {"POD_CAPACITY_RPS", "COLD_START_COST_POD_SECONDS", "MAX_SCALE", "COOLDOWN_SECONDS", "IDLE_WINDOW", "BUSY_WINDOW", "BURST_RISK"}
"""Read through the policy knob table (scale/policy_knobs.py), not by name in the code."""


def func_yaml_envs(path: Path) -> dict[str, str]:
    """What `func deploy` sets: the function's func.yaml `run.envs`."""
    import yaml

    config = yaml.safe_load(path.read_text()) if path.exists() else {}
    return {e["name"]: str(e.get("value", "")) for e in ((config or {}).get("run") or {}).get("envs") or []}


def all_meanings() -> dict[str, str]:
    """Meanings across every function, for a variable documented in one and read in another
    (REDIS_URL in the dead-letter sink, say)."""
    meanings: dict[str, str] = {}
    for _, directory in FUNCTIONS:
        for path in sorted((ROOT / "functions" / directory).rglob("*.py")):
            if ".venv" not in path.parts:
                meanings_in(path, meanings)
    return meanings


def knob_table() -> str:
    sys.path.insert(0, str(ROOT / "functions" / "scale"))
    from scale.policy_knobs import markdown_table

    return markdown_table()


def render() -> str:
    shared = all_meanings()
    parts = [
        "# Settings reference",
        "",
        "<!-- Generated by scripts/gen_settings_reference.py from the settings code: do not edit by hand. -->",
        "",
        "Every function reads its settings from environment variables once, at start (func.yaml's",
        "`run.envs`, or the Service's `env`). An unset or empty variable takes the default below; a set",
        "one must follow the rule, or the function refuses to start and says which variable, which",
        "rule and which value (a typo in a manifest stops a rollout instead of running with a default",
        "nobody chose). Defaults and rules are read from the code, what `func deploy` sets from each",
        "function's `func.yaml` (`run.envs`; edit it for your cluster), the meanings from the docstrings",
        "beside the code.",
        "",
        "## Policy knobs (per-Service annotations)",
        "",
        "The scale function's policy, one table (`functions/scale/scale/policy_knobs.py`): the environment",
        "variable sets the fleet-wide default, the annotation on a Knative Service's `metadata`",
        "overrides it for that Service. A value that does not parse skips the Service with the reason:",
        "a typo never becomes a scale-down.",
        "",
        knob_table(),
        "",
    ]
    for title, directory in FUNCTIONS:
        parts += [f"## {title}", "", f"Read by `functions/{directory}/`.", "", function_table(directory, shared), ""]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the committed page differs")
    args = parser.parse_args(argv)
    page = render()
    if args.check:
        if not PAGE.exists() or PAGE.read_text() != page:
            print(f"{PAGE.relative_to(ROOT)} is out of date: run python scripts/gen_settings_reference.py", file=sys.stderr)
            return 1
        return 0
    PAGE.parent.mkdir(parents=True, exist_ok=True)
    PAGE.write_text(page)
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
