"""Renders the results tables of docs/ from the JSON that benchmarks and backtests print with
`--format json` (`FORMAT=json` for the make targets), committed under docs/results/data/.

Why: a table pasted by hand goes stale or loses digits; a table rendered from the run's own
output changes only when the run does. Re-run the command a page names, save its JSON over the
file, then run this script. Each table sits between two markers in a page:

    <!-- results: KIND data/FILE.json -->
    ...the generated table...
    <!-- /results -->

KIND picks the renderer below; FILE is relative to docs/results/.

    python scripts/gen_results_tables.py          # rewrite every marked table
    python scripts/gen_results_tables.py --check  # exit 1 when a committed table differs
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
RESULTS = DOCS / "results"
MARKER = re.compile(r"(<!-- results: (?P<kind>[\w-]+) (?P<file>[\w./-]+\.json) -->\n)(?P<body>.*?)(<!-- /results -->)", re.S)


def _x(value: float) -> str:
    """A ratio to the baseline, `n/a` where the baseline had none (0 / 0)."""
    return "n/a" if value != value else f"{value:.3f}"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


def wsgi_frameworks(data: dict) -> str:
    raw, flask = "raw WSGI (infer/app.py)", "Flask"
    cases = list(dict.fromkeys(k.split(" | ")[0] for k in data["per_request_us"]))
    lines = [f"Measured {data['measured']}, {data['model']}, median of {data['rounds']} rounds x "
             f"{data['requests_per_round']} requests per app (in-process WSGI calls, no server between):", "",
             "| request | raw WSGI adapter, us | Flask, us | Flask / raw |", "|---|---:|---:|---:|"]
    for case in cases:
        r, f = data["per_request_us"][f"{case} | {raw}"], data["per_request_us"][f"{case} | {flask}"]
        lines.append(f"| {case} | {r:.1f} | {f:.1f} | {_ratio(f, r)} |")
    ri, fi = data["import"][raw], data["import"][flask]
    lines += ["", "| a fresh interpreter | `import infer.app` | `import infer.app, flask` | added by Flask |",
              "|---|---:|---:|---:|",
              f"| import, s | {ri['seconds']:.3f} | {fi['seconds']:.3f} | +{fi['seconds'] - ri['seconds']:.3f} |",
              f"| resident memory after it, MiB | {ri['rss_mib']:.1f} | {fi['rss_mib']:.1f} | +{fi['rss_mib'] - ri['rss_mib']:.1f} |",
              f"| modules loaded | {ri['modules']} | {fi['modules']} | +{fi['modules'] - ri['modules']} |"]
    return "\n".join(lines)


def prometheus_clients(data: dict) -> str:
    theirs = data["sides"]["prometheus-api-client"]
    ours = data["sides"]["ours (forecast/prometheus_source.py)"]
    lines = [f"Measured {data['measured']}; one `query_range` answer of {data['series']:,} series x 1,440 minutes "
             f"({theirs['samples']:,} samples). Installing prometheus-api-client beside what our client "
             f"imports (requests, numpy, prometheus-client) adds {theirs['distributions'] - ours['distributions']} "
             f"distributions and {theirs['size_mib'] - ours['size_mib']:.1f} MiB.", "",
             "| measure | prometheus-api-client | ours | ours / theirs |", "|---|---:|---:|---:|"]
    rows = (("import in a fresh interpreter, s", "import_s", "{:.3f}", 1),
            ("resident memory after the import, MiB", "rss_mib", "{:.1f}", 1),
            ("modules loaded by the import", "modules", "{:.0f}", 1),
            ("one range query, s", "seconds", "{:.3f}", 1),
            ("peak Python memory of that query, MiB", "peak_bytes", "{:.1f}", 2**20))
    for title, key, fmt, scale in rows:
        a, b = theirs[key] / scale, ours[key] / scale
        lines.append(f"| {title} | {fmt.format(a)} | {fmt.format(b)} | {_ratio(b, a)} |")
    return "\n".join(lines)


def single_trace(data: list[dict]) -> str:
    """`make backtest TRACE=... FORMAT=json`: one row per policy and setting."""
    lines = ["| policy | settings | requests | cold | cold % | cold vs KPA | over capacity | over cap vs KPA | "
             "pod-s vs KPA |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s in data:
        settings = ", ".join(f"{k}={v}" for k, v in s["settings"].items()) or "Knative defaults"
        if s.get("default"):
            settings += " (default)"
        policy = f"**{s['policy']}**" if s["policy"] == "predictive" and s.get("default") else s["policy"]
        lines.append(f"| {policy} | {settings} | {s['requests']} | {s['cold_start_requests']} | {s['cold_start_pct']:.2f} | "
                     f"{_x(s['cold_start_vs_kpa'])} | {s['over_capacity_requests']} | {_x(s['over_capacity_vs_kpa'])} | "
                     f"{_x(s['pod_seconds_vs_kpa'])} |")
    return "\n".join(lines)


CLUSTER_RUNS = {"kpa", "keepalive", "pool_all_kpa", "predictive"}
"""Fleet rows a deployment runs; the others are baselines no cluster runs (bold in the table)."""


def fleet(data: list[dict]) -> str:
    """`make backtest-fleet FLEET=... FORMAT=json`: one row per policy and setting."""
    lines = ["| policy | settings | cold | cold % | cold vs KPA | p75 service cold % | model loads | "
             "over capacity | over cap vs KPA | pod-s vs KPA | wasted pod-s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in data:
        settings = ", ".join(f"{k}={v}" for k, v in s["settings"].items())
        if s.get("default") and s["policy"] == "predictive":
            settings += " (default)"
        policy = f"**{s['policy']}**" if s["policy"] in CLUSTER_RUNS else s["policy"]
        lines.append(f"| {policy} | {settings} | {s['cold_start_requests']} | {s['cold_start_pct']:.2f} | "
                     f"{_x(s['cold_start_vs_kpa'])} | {s['p75_service_cold_pct']:.1f} | {s['model_loads']} | "
                     f"{s['over_capacity_requests']} | {_x(s['over_capacity_vs_kpa'])} | {_x(s['pod_seconds_vs_kpa'])} | "
                     f"{s['wasted_pod_seconds']} |")
    return "\n".join(lines)


def fleet_findings(infos: list[dict]) -> str:
    """`make backtest-fleet FLEET=... INFO=file.json`: what the run found besides its scores, as
    the backtest prints it (training.fleet_backtest.findings_lines), one bullet a line; a file of
    several fleets (no FLEET=) gives each its heading."""
    for extra in (ROOT, ROOT / "functions" / "forecast", ROOT / "functions" / "scale"):
        if str(extra) not in sys.path:
            sys.path.insert(0, str(extra))
    from training.fleet_backtest import findings_lines

    out = []
    if isinstance(infos, dict):  # a file written before `--info` wrote a list
        infos = [infos]
    for info in infos:
        head, tail = findings_lines(info)
        if len(infos) > 1:
            out.append(f"{info['fleet']}:")
        out += [f"- {line}" for block in head + tail for line in block.split("\n")]
    return "\n".join(out)


RENDERERS: dict[str, Callable] = {
    "fleet": fleet,
    "fleet-findings": fleet_findings,
    "wsgi-frameworks": wsgi_frameworks,
    "prometheus-clients": prometheus_clients,
    "single-trace": single_trace,
}


def render_page(text: str) -> str:
    def replace(match: re.Match) -> str:
        kind, file = match["kind"], match["file"]
        if kind not in RENDERERS:
            raise SystemExit(f"unknown results kind {kind!r}: one of {sorted(RENDERERS)}")
        data = json.loads((RESULTS / file).read_text())
        return f"{match[1]}{RENDERERS[kind](data)}\n{match[5]}"

    return MARKER.sub(replace, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a committed table differs")
    args = parser.parse_args(argv)
    stale = []
    for page in sorted(DOCS.rglob("*.md")):
        text = page.read_text()
        rendered = render_page(text)
        if rendered == text:
            continue
        if args.check:
            stale.append(str(page.relative_to(ROOT)))
        else:
            page.write_text(rendered)
            print(f"wrote {page.relative_to(ROOT)}")
    if stale:
        print(f"out of date: {', '.join(stale)}: run python scripts/gen_results_tables.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
