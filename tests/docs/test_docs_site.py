"""The documentation: the MkDocs site builds strictly (a broken link, a missing anchor or a page
left out of the navigation fails), the pages generated from code equal what their generators
write, and the README stays a short front page whose numbers all point at where they come from."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import yaml

from tests.support.servers import ROOT

README = (ROOT / "README.md").read_text()


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_the_site_builds_strictly(tmp_path):
    result = _run("-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "reference" / "settings" / "index.html").exists()


def test_a_broken_link_fails_the_strict_build(tmp_path):
    """The build is the check: the same configuration with one page linking to nowhere fails."""
    docs = tmp_path / "docs"
    subprocess.run(["cp", "-r", str(ROOT / "docs"), str(docs)], check=True)
    (docs / "install.md").write_text((docs / "install.md").read_text() + "\n[gone](no-such-page.md)\n")
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    config["docs_dir"] = str(docs)
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config))
    result = _run("-m", "mkdocs", "build", "--strict", "-f", str(tmp_path / "mkdocs.yml"),
                  "--site-dir", str(tmp_path / "site"))
    assert result.returncode != 0 and "no-such-page.md" in result.stdout + result.stderr


def test_every_page_is_in_the_navigation():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def pages(node):
        if isinstance(node, str):
            yield node
        elif isinstance(node, dict):
            for value in node.values():
                yield from pages(value)
        elif isinstance(node, list):
            for item in node:
                yield from pages(item)

    listed = set(pages(config["nav"]))
    written = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    assert written == listed, (written - listed, listed - written)
    assert config["validation"]["omitted_files"] == "warn" and config.get("strict") is True


@pytest.mark.parametrize("script", ["scripts/gen_settings_reference.py", "scripts/gen_results_tables.py"])
def test_generated_pages_equal_what_their_generators_write(script):
    result = _run(script, "--check")
    assert result.returncode == 0, f"{script} --check: {result.stdout}{result.stderr}"


def test_the_settings_reference_lists_what_the_code_reads_with_the_code_s_defaults():
    page = (ROOT / "docs" / "reference" / "settings.md").read_text()
    from forecast.settings import ForecastSettings
    from scale.settings import ScaleSettings

    class Recording(dict):
        def __init__(self):
            super().__init__()
            self.asked = set()

        def get(self, key, default=None):
            self.asked.add(key)
            return default

        def __contains__(self, key):
            self.asked.add(key)
            return False

    for settings in (ForecastSettings, ScaleSettings):
        env = Recording()
        settings.from_env(env)
        knobs = {"POD_CAPACITY_RPS", "COLD_START_COST_POD_SECONDS", "MAX_SCALE", "COOLDOWN_SECONDS", "IDLE_WINDOW", "BUSY_WINDOW", "BURST_RISK"}
        for name in env.asked:
            assert f"`{name}`" in page, f"{settings.__name__} reads {name}; the settings reference does not list it"
        assert env.asked - knobs
    rows = {line.split("|")[1].strip(): line for line in page.splitlines() if line.startswith("| `")}
    assert "| 604800 |" in rows["`STATE_TTL_SECONDS`"]  # 7 * 86400 in the code
    assert "`models/forecaster`" in rows["`FORECASTER_ROOT`"]
    assert "| 33554432 |" in rows["`MAX_EVENT_BYTES`"]  # http_guard.MAX_BYTES


def test_the_readme_is_a_short_front_page():
    lines = README.splitlines()
    assert len(lines) < 250
    assert re.search(r"^make test\b", README, re.M), "CI runs `make test`: the README's test command stays exactly that"
    assert not re.search(r"!\[[^\]]*\]\(", README), "no image: a clean clone has none (docs/*.png are git-ignored)"
    for link in re.findall(r"\]\((docs/[^)#]+)(?:#[^)]*)?\)", README):
        assert (ROOT / link).exists(), link
    assert "2-core machine shared" not in README and "the issue" not in README


def test_every_headline_number_names_its_page_command_and_date():
    section = README[README.index("## Headline results"):]
    section = section[:section.index("\n## ")]
    rows = [line for line in section.splitlines() if line.startswith("|") and not line.startswith("|---")][1:]
    assert len(rows) == 5
    for row in rows:
        what, result, page, command, measured = [c.strip() for c in row.strip("|").split("|")]
        assert re.search(r"\d", result), row
        assert re.fullmatch(r"\[[^\]]+\]\(docs/results/[\w/.-]+\.md(#[\w-]+)?\)", page), row
        assert re.fullmatch(r"`make [^`]+`", command), row
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", measured), row
        target = page[page.index("(") + 1:-1].split("#")[0]
        assert measured in (ROOT / target).read_text(), f"{target} does not say {measured}"
    numbers_outside = [line for line in README.splitlines() if re.search(r"\b\d+(\.\d+)?x\b", line)
                       and not line.startswith("|")]
    assert not numbers_outside, numbers_outside


def test_every_results_page_says_when_and_where_it_was_measured():
    for page in sorted((ROOT / "docs" / "results").glob("*.md")):
        text = page.read_text()
        assert "2-core shared sandbox" in text, page.name
        assert re.search(r"20\d\d-\d\d-\d\d", text), page.name
        assert "`make " in text or "python " in text, page.name
        assert "this machine" not in text and "other agents" not in text, page.name


def _generator():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_settings_reference", ROOT / "scripts" / "gen_settings_reference.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_settings_generator_refuses_what_it_cannot_document(tmp_path, monkeypatch):
    """A variable the code reads that no docstring explains, or one func.yaml sets that no code
    reads (a typo there is silently ignored by the function), stops the generator."""
    gen = _generator()
    monkeypatch.setattr(gen, "ROOT", tmp_path)
    package = tmp_path / "functions" / "demo" / "demo"
    package.mkdir(parents=True)
    (package / "settings.py").write_text(
        '"""| variable | default | meaning |\n|---|---|---|\n| DEMO_LIMIT | 3 | how many |\n"""\n'
        "def load(env):\n    return whole(env, 'DEMO_LIMIT', 3, 1), text(env, 'DEMO_MODE', 'on')\n")
    with pytest.raises(SystemExit, match="DEMO_MODE"):
        gen.function_table("demo", {})
    (package / "settings.py").write_text(
        '"""| variable | default | meaning |\n|---|---|---|\n| DEMO_LIMIT | 3 | how many |\n"""\n'
        "def load(env):\n    return whole(env, 'DEMO_LIMIT', 3, 1)\n")
    assert "| `DEMO_LIMIT` | 3 |  | integer, >= 1 | how many |" in gen.function_table("demo", {})
    (tmp_path / "functions" / "demo" / "func.yaml").write_text("run:\n  envs:\n    - name: DEMO_LIMT\n      value: '5'\n")
    with pytest.raises(SystemExit, match="DEMO_LIMT"):
        gen.function_table("demo", {})


def test_a_rerun_s_json_rewrites_its_table(tmp_path, monkeypatch):
    """The results tables come from the run's own JSON: new numbers in the file, new numbers in
    the page, nothing else of the page touched."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_results_tables", ROOT / "scripts" / "gen_results_tables.py")
    gen = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = gen
    spec.loader.exec_module(gen)
    monkeypatch.setattr(gen, "RESULTS", tmp_path)
    row = {"policy": "predictive", "settings": {"cold_start_cost_pod_s": 300.0}, "default": True, "requests": 100,
           "cold_start_requests": 7, "cold_start_pct": 7.0, "cold_start_vs_kpa": 0.25, "over_capacity_requests": 0,
           "over_capacity_vs_kpa": float("nan"), "pod_seconds_vs_kpa": 1.5, "p75_service_cold_pct": 9.0,
           "model_loads": 3, "wasted_pod_seconds": 11}
    page = "# page\n\nbefore\n\n<!-- results: fleet data/f.json -->\nold table\n<!-- /results -->\n\nafter\n"
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "f.json").write_text(json.dumps([row]))
    first = gen.render_page(page)
    assert "old table" not in first and "| **predictive** | cold_start_cost_pod_s=300.0 (default) | 7 | 7.00 | 0.250 |" in first
    assert "| n/a |" in first and first.startswith("# page\n\nbefore\n\n") and first.endswith("<!-- /results -->\n\nafter\n")
    (tmp_path / "data" / "f.json").write_text(json.dumps([{**row, "cold_start_requests": 5, "cold_start_vs_kpa": 0.125}]))
    second = gen.render_page(first)
    assert "| 5 | 7.00 | 0.125 |" in second and gen.render_page(second) == second
