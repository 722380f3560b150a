"""Fleet features use the past only: changing any minute at or after an origin leaves that
origin's row unchanged; and they see what they claim to."""

from __future__ import annotations

import numpy as np

from training.fleet_features import PERIODS, fleet_activity, period_features


def test_no_peeking_rows_do_not_move_when_the_future_changes():
    rng = np.random.default_rng(0)
    counts = (rng.random((5, 600)) < 0.1) * rng.integers(1, 9, (5, 600)).astype(float)
    origins = np.arange(0, 600, 7)
    activity, periods = fleet_activity(counts, origins), period_features(counts[2], origins)
    for cut in (50, 200, 431):
        changed = counts.copy()
        changed[:, cut:] = rng.integers(0, 30, changed[:, cut:].shape)
        past = origins <= cut
        assert np.array_equal(fleet_activity(changed, origins)[past], activity[past])
        assert np.array_equal(period_features(changed[2], origins)[past], periods[past])
        assert not np.array_equal(fleet_activity(changed, origins)[~past], activity[~past])


def test_activity_and_periods_see_what_they_claim():
    counts = np.zeros((4, 400))
    counts[0, 99] = 1
    counts[1, 95] = 3
    act = fleet_activity(counts, np.array([100]))
    assert act.tolist() == [[0.25, 0.5, 0.5]]  # last minute: 1 of 4; last 5 and 15: 2 of 4
    hourly = np.zeros(400)
    hourly[10::60] = 2  # a job at minute 10 of every hour
    rows = period_features(hourly, np.array([370, 385]))
    k60 = PERIODS.index(60)
    assert rows[0, k60] == 1.0 and rows[0, -1] == 1.0  # 370 = 10 + 6 * 60: every past cycle had it
    assert rows[1, k60] == 0.0  # 385: off phase
