"""The fleet reader: the sidecar's span and services, idle bins, generated arrivals, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training.fleet_trace import FleetTraceError, load_fleet

START = 1_700_000_040  # a minute boundary


def write(tmp_path, rows, meta=None, name="fleet_1s.csv", header="timestamp,service,requests"):
    path = tmp_path / name
    path.write_text("\n".join([header] + rows) + "\n")
    meta = meta if meta is not None else {"bin_seconds": 1, "start": START, "end": START + 180, "services": ["a", "b", "quiet"]}
    (tmp_path / (name + ".json")).write_text(json.dumps(meta))
    return path


def test_sidecar_span_services_and_idle_bins(tmp_path):
    path = write(tmp_path, [f"{START + 5},a,2", f"{START + 61},b,1", f"{START + 179},a,3"])
    fleet = load_fleet(path)
    assert fleet.services == ("a", "b", "quiet")
    assert fleet.minutes == 3 and fleet.seconds == 180
    minutes = fleet.minute_counts()
    assert minutes.tolist() == [[2, 0, 3], [0, 1, 0], [0, 0, 0]]  # no row = idle; "quiet" exists with no request
    seconds = fleet.day_arrivals(0)
    assert seconds.shape == (3, 180)
    assert seconds[0, 5] == 2 and seconds[0, 179] == 3 and seconds[1, 61] == 1 and seconds.sum() == 6


def test_wide_bins_are_spread_inside_their_window_deterministically(tmp_path):
    meta = {"bin_seconds": 600, "start": START - START % 600, "end": START - START % 600 + 1800, "services": ["x", "y"]}
    s0 = meta["start"]
    path = write(tmp_path, [f"{s0},x,1000", f"{s0 + 1200},x,7", f"{s0 + 600},y,3"], meta, name="fleet_600s.csv")
    one, two = load_fleet(path, seed=4), load_fleet(path, seed=4)
    a, b = one.day_arrivals(0), two.day_arrivals(0)
    assert np.array_equal(a, b)  # seeded: every run sees the same arrivals
    assert a[0, :600].sum() == 1000 and a[0, 600:1200].sum() == 0 and a[0, 1200:].sum() == 7  # exact window counts
    assert a[1, 600:1200].sum() == 3 and a[1].sum() == 3
    assert 400 < (a[0, :600] > 0).sum() < 560  # uniform: ~600 * (1 - exp(-1000/600)) = 489 busy seconds
    other = load_fleet(path, seed=5).day_arrivals(0)
    assert not np.array_equal(a, other)


@pytest.mark.parametrize("row, message", [
    ("x,a,1", ":2: timestamp and requests must be integers"),
    (f"{START + 1},nobody,1", ":2: service 'nobody' is not in"),
    (f"{START + 180},a,1", ":2: timestamp"),
    (f"{START + 1},a,0", ":2: requests must be > 0"),
    (f"{START + 1},a", ":2: expected 3 fields"),
])
def test_bad_rows_name_the_file_and_line(tmp_path, row, message):
    path = write(tmp_path, [row])
    with pytest.raises(FleetTraceError) as e:
        load_fleet(path)
    assert str(path) in str(e.value) and message in str(e.value)


def test_bad_row_on_a_later_line_names_that_line(tmp_path):
    path = write(tmp_path, [f"{START},a,1", f"{START + 1},b,1", f"{START + 2},b,-3"])
    with pytest.raises(FleetTraceError, match=r"fleet_1s.csv:4: requests must be > 0"):
        load_fleet(path)


def test_bad_header_duplicates_and_sidecar(tmp_path):
    with pytest.raises(FleetTraceError, match=r":1: header"):
        load_fleet(write(tmp_path, [], header="timestamp,requests"))
    with pytest.raises(FleetTraceError, match="two rows"):
        load_fleet(write(tmp_path, [f"{START},a,1", f"{START},a,2"]))
    with pytest.raises(FleetTraceError, match="'end' must be an integer"):
        load_fleet(write(tmp_path, [], {"bin_seconds": 1, "start": START, "end": "later", "services": ["a"]}))
    with pytest.raises(FleetTraceError, match="distinct"):
        load_fleet(write(tmp_path, [], {"bin_seconds": 1, "start": START, "end": START + 60, "services": ["a", "a"]}))
    path = tmp_path / "nosidecar.csv"
    path.write_text("timestamp,service,requests\n")
    with pytest.raises(FleetTraceError, match="nosidecar.csv.json: cannot read the sidecar"):
        load_fleet(path)
    (tmp_path / "broken.csv").write_text("timestamp,service,requests\n")
    (tmp_path / "broken.csv.json").write_text('{"bin_seconds": 1,\n "start": }')
    with pytest.raises(FleetTraceError, match=r"broken.csv.json:2: not JSON"):
        load_fleet(tmp_path / "broken.csv")
