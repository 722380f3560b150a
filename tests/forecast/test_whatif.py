"""The what-if (`python -m training.backtest --prometheus URL`) against the real back-filled
Prometheus: its results equal the CSV backtest's on the same series; its fleet is the fleet file's."""

from __future__ import annotations

import json

import numpy as np
from threadpoolctl import threadpool_limits

from tests.forecast.conftest import END_MINUTE, GAP
from tests.forecast.test_forecast_function import range_queries
from training import backtest, whatif
from training.fleet_trace import load_fleet
from training.traces import load_trace

COMMON = ["--format", "json", "--fit-on", "trace", "--capacity-rps", "5"]


def run_json(argv: list[str], capsys) -> object:
    capsys.readouterr()
    with threadpool_limits(1):  # HistGradientBoosting's OpenMP threads thrash on a shared 2-core machine
        backtest.main(argv)
    return json.loads(capsys.readouterr().out)


def without(rows: list[dict], key: str) -> list[dict]:
    return [{k: v for k, v in r.items() if k != key} for r in rows]


def write_csvs(backfill, start: int, end: int, folder) -> tuple[list[str], object]:
    traces, fleet_rows, services = [], ["timestamp,service,requests"], sorted(backfill.series)
    for name in services:
        counts = backfill.series[name][start - backfill.start_minute:end - backfill.start_minute]
        path = folder / f"{name.replace('/', '_')}.csv"
        path.write_text("timestamp,requests\n" + "".join(
            f"{(start + i) * 60},{int(v)}\n" for i, v in enumerate(counts) if not np.isnan(v)))
        traces += ["--trace", str(path)]
        fleet_rows += [f"{(start + i) * 60},{name},{int(v)}" for i, v in enumerate(counts) if v > 0]
    fleet = folder / "fleet.csv"
    fleet.write_text("\n".join(fleet_rows) + "\n")
    (folder / "fleet.csv.json").write_text(json.dumps(
        {"bin_seconds": 60, "start": start * 60, "end": end * 60, "services": services}))
    return traces, fleet


def test_whatif_equals_the_csv_backtest_on_the_same_series(backfill, backfilled_prometheus, tmp_path, capsys):
    got = run_json(["--prometheus", backfilled_prometheus.url, "--preset", "knative-1.21",
                    "--selector", 'k8s_namespace_name="models"', "--days", "1", "--end", str(END_MINUTE * 60),
                    *COMMON], capsys)
    ranges = range_queries(backfilled_prometheus)  # the function's query: a range at a 60 s step
    assert len(ranges) == 1 and ranges[0]["params"]["step"] == 60
    traces, _ = write_csvs(backfill, END_MINUTE - 1440, END_MINUTE, tmp_path)
    single = run_json([*traces, *COMMON], capsys)
    assert got["services"] and without(got["services"], "trace") == without(single, "trace")
    assert {r["trace"] for r in got["services"]} == {"models_nasa", "models_sd-lora"}
    kpa = [r for r in got["services"] if r["policy"] == "kpa" and not r["settings"]]  # Knative as configured
    assert len(kpa) == 2 and all(r["requests"] > 0 and r["cold_start_requests"] > 0 for r in kpa)
    assert got["fleet"] == []  # a day is too short for the fleet form (warm-up: two days)


def test_whatif_reads_the_series_and_fleet_the_csv_backtest_reads(backfill, backfilled_prometheus, tmp_path):
    """Eight days, read a day a query: the traces (gap included) and the fleet are the files'."""
    end, start = END_MINUTE, END_MINUTE - 8 * 1440
    series = whatif.read_history(backfilled_prometheus.url, "istio", "", 8, end, progress=False)
    assert len(range_queries(backfilled_prometheus)) == 8
    _, fleet_path = write_csvs(backfill, start, end, tmp_path)
    assert sorted(series) == sorted(backfill.series)
    for name, counts in series.items():
        assert np.isnan(counts).sum() == GAP[1] - GAP[0]  # the gap is a gap, never idle
        mine = whatif.as_trace(name, counts, start)
        theirs = load_trace(tmp_path / f"{name.replace('/', '_')}.csv")
        assert mine.start_minute == theirs.start_minute and mine.seconds is theirs.seconds is None
        np.testing.assert_array_equal(mine.minutes, theirs.minutes)
        np.testing.assert_array_equal(mine.gap_seconds, theirs.gap_seconds)
    mine, theirs = whatif.as_fleet("f", series, start), load_fleet(fleet_path)
    assert (mine.start, mine.end, mine.services, mine.bin_seconds) == (theirs.start, theirs.end, theirs.services, 60)
    for field in ("bins", "service_index", "counts"):
        np.testing.assert_array_equal(getattr(mine, field), getattr(theirs, field))


def test_whatif_says_when_nothing_matches(backfilled_prometheus):
    try:
        backtest.main(["--prometheus", backfilled_prometheus.url, "--selector", 'k8s_namespace_name="nowhere"',
                       "--days", "1", "--end", str(END_MINUTE * 60)])
    except SystemExit as exc:
        assert "no service had a request" in str(exc.code)
    else:
        raise AssertionError("an empty what-if must say so")
