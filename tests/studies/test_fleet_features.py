"""Fleet activity uses the past only: changing any minute at or after an origin leaves that
origin's row unchanged; and it sees what it claims to."""

from __future__ import annotations

import numpy as np

from studies.fleet_features import fleet_activity


def test_no_peeking_rows_do_not_move_when_the_future_changes():
    rng = np.random.default_rng(0)
    counts = (rng.random((5, 600)) < 0.1) * rng.integers(1, 9, (5, 600)).astype(float)
    origins = np.arange(0, 600, 7)
    activity = fleet_activity(counts, origins)
    for cut in (50, 200, 431):
        changed = counts.copy()
        changed[:, cut:] = rng.integers(0, 30, changed[:, cut:].shape)
        past = origins <= cut
        assert np.array_equal(fleet_activity(changed, origins)[past], activity[past])
        assert not np.array_equal(fleet_activity(changed, origins)[~past], activity[~past])


def test_activity_sees_what_it_claims():
    counts = np.zeros((4, 400))
    counts[0, 99] = 1
    counts[1, 95] = 3
    act = fleet_activity(counts, np.array([100]))
    assert act.tolist() == [[0.25, 0.5, 0.5]]  # last minute: 1 of 4; last 5 and 15: 2 of 4
