"""The tick's one pass over the history (quality.row_counts) counts what each per-row definition
counts: the reply's data window, the staleness check's last minute, the quality baselines."""

from __future__ import annotations

import numpy as np
import pytest

from forecast import features, quality
from forecast.tick import _window, _windows_of


def history(rows: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(rows * 31 + width)
    m = rng.poisson(0.4, (rows, width)).astype(np.float32)
    m[rng.random((rows, width)) < 0.15] = np.nan
    m[1] = np.nan                      # never observed
    m[2, -70:] = np.nan                # stale: nothing in the last hour and more
    if width > 5:
        m[3, :-5] = np.nan             # only its last minutes
    return m


@pytest.mark.parametrize("rows,width", [(2500, 1500), (7, 40), (4, 1)])
def test_one_pass_counts_what_each_row_s_definition_counts(rows, width):
    m = history(rows, width)
    seen, active, last, gaps = quality.row_counts(m)
    for i, row in enumerate(m):
        valid = ~np.isnan(row)
        assert seen[i] == valid.sum() and active[i] == (np.nan_to_num(row) > 0).sum()
        assert last[i] == (np.flatnonzero(valid)[-1] if valid.any() else -1)
        assert gaps[i] == (~valid[-60:]).sum()
    start, end = 29_000_000, 29_000_000 + width
    assert _windows_of(seen, gaps, width, start, end, 60) == [_window(row, start, end, 60) for row in m]


def test_baselines_from_the_counts_equal_the_baselines_counted_again():
    m = history(1200, 3 * quality.DAY)
    seen, active, _, _ = quality.row_counts(m)
    column = m.shape[1]
    for ours, theirs in zip(quality.baselines(m, column, seen, active), quality.baselines(m, column)):
        np.testing.assert_array_equal(ours, theirs)
    # and the base rate is the share of observed minutes that had a request, by its definition
    observed = ~np.isnan(m)
    share = np.where(observed.sum(1) > 0, (np.nan_to_num(m) > 0).sum(1) / np.maximum(observed.sum(1), 1), 0.0)
    np.testing.assert_array_equal(quality.baselines(m, column)[1], share)


def test_per_service_figures_are_the_sums_a_loop_over_the_rounds_makes():
    rng = np.random.default_rng(5)
    tracker = quality.OnlineQuality(window_minutes=60)
    names = [f"ns/s{k}" for k in range(300)]
    for minute in range(100, 140):
        some = [n for n in names if rng.random() < 0.8]
        point = rng.gamma(1.0, 2.0, len(some)).astype(np.float32)
        p_any = rng.random(len(some)).astype(np.float32)
        naive = rng.gamma(1.0, 2.0, len(some))
        naive[::17] = np.nan
        tracker.expect(minute, some, point, p_any, naive, rng.random(len(some)))
    matrix = rng.poisson(1.5, (len(names), 200)).astype(np.float32)
    matrix[rng.random(matrix.shape) < 0.1] = np.nan
    assert tracker.score(0, 200, names, matrix) > 0
    sums: dict[str, list] = {}
    for _, kept, errors, squares, actual, naive, base in tracker._rounds:
        for name, *values in zip(kept, errors.tolist(), squares.tolist(), actual.tolist(), naive.tolist(), base.tolist()):
            acc = sums.setdefault(name, [0.0, 0.0, 0, 0.0, 0.0, 0.0])
            for j, v in zip((0, 1, 3, 4, 5), values):
                acc[j] += v
            acc[2] += 1
    expected = {n: quality.Figures(e / k, s / k, k, a, nv / k, b / k) for n, (e, s, k, a, nv, b) in sums.items()}
    got = tracker.per_service()
    assert list(got) == list(expected) and len(got) > 100
    for name in expected:
        assert repr(got[name]) == repr(expected[name]), name  # repr: NaN compares equal to NaN


def test_the_last_request_searched_from_the_tail_is_the_row_s_last_request():
    """features.last_nonzero_at_end widens its search only for the rows without a request near
    the end: the same column as a search of the whole row, wherever that request is."""
    for width in (3000, 100, 1, 0):
        rng = np.random.default_rng(width)
        m = rng.poisson(0.3, (40, width)).astype(np.float32)
        m[rng.random(m.shape) < 0.2] = np.nan
        for row, quiet in enumerate((10, 63, 64, 65, 500, 1439, 1440, 1441, 2999, 3000)):
            m[row, max(0, width - quiet):] = 0.0  # its last request `quiet` minutes back, or none
        m[10] = np.nan
        m[11, :] = 0.0
        m[12, :] = np.nan
        m[12, :1] = 2.0  # a request in the first minute only
        got = features.last_nonzero_at_end(m)
        for i, row in enumerate(m):
            hits = np.flatnonzero(np.nan_to_num(row) > 0)
            assert got[i] == (hits[-1] if len(hits) else -1), (width, i)
