"""Synthetic per-minute request series that the published forecaster is trained on.

The shared traces are for evaluation only (tests, backtests, benchmarks): training the shipped
model on them would score it on its own training data. These generators cover the shapes that
scale-to-zero inference services show: diurnal and weekly cycles at every level from a request
an hour to hundreds a minute, cron-like periodic jobs, on/off bursts, and a slow drift.
"""

from __future__ import annotations

import numpy as np

DAY = 1440


def _diurnal(rng: np.random.Generator, minutes: np.ndarray) -> np.ndarray:
    phase = rng.uniform(0, 2 * np.pi)
    depth = rng.uniform(0.2, 1.0)
    daily = 1 + depth * np.sin(2 * np.pi * minutes / DAY + phase)
    weekend = np.where(((minutes // DAY) % 7) >= 5, rng.uniform(0.3, 1.0), 1.0)
    return np.clip(daily, 0.02, None) * weekend


def diurnal_poisson(rng: np.random.Generator, minutes: np.ndarray) -> np.ndarray:
    level = np.exp(rng.uniform(np.log(0.02), np.log(300)))
    return rng.poisson(level * _diurnal(rng, minutes)).astype(float)


def periodic_job(rng: np.random.Generator, minutes: np.ndarray) -> np.ndarray:
    period = int(rng.choice([5, 10, 15, 30, 60, 120, 240]))
    offset = int(rng.integers(period))
    size = np.exp(rng.uniform(0, np.log(200)))
    fire = ((minutes - offset) % period) == 0
    jitter = rng.random(len(minutes)) < 0.05  # late runs spill into the next minute
    counts = np.where(fire, rng.poisson(size, len(minutes)), 0).astype(float)
    counts[1:] += np.where(jitter[1:] & fire[:-1], rng.poisson(size / 2, len(minutes) - 1), 0)
    return counts


def on_off_bursts(rng: np.random.Generator, minutes: np.ndarray) -> np.ndarray:
    """A two-state Markov chain: long idle spells, bursts of a few minutes to an hour."""
    p_start = np.exp(rng.uniform(np.log(1 / 2000), np.log(1 / 30)))
    p_stop = 1 / rng.uniform(2, 60)
    level = np.exp(rng.uniform(np.log(0.5), np.log(200)))
    diurnal = _diurnal(rng, minutes)
    state = np.zeros(len(minutes), dtype=bool)
    draws = rng.random(len(minutes))
    on = False
    for i in range(len(minutes)):
        on = (draws[i] >= p_stop) if on else (draws[i] < p_start * diurnal[i])
        state[i] = on
    return np.where(state, rng.poisson(level, len(minutes)), 0).astype(float)


def drifting(rng: np.random.Generator, minutes: np.ndarray) -> np.ndarray:
    walk = np.cumsum(rng.normal(0, 0.01, len(minutes)))
    level = np.exp(rng.uniform(np.log(0.1), np.log(100)) + walk - walk.mean())
    return rng.poisson(level * _diurnal(rng, minutes)).astype(float)


GENERATORS = (diurnal_poisson, periodic_job, on_off_bursts, drifting)


def make_fleet(n_series: int, days: int, seed: int = 0) -> np.ndarray:
    """(n_series, days * 1440) counts, the generators in turn."""
    rng = np.random.default_rng(seed)
    minutes = np.arange(days * DAY)
    return np.vstack([GENERATORS[i % len(GENERATORS)](rng, minutes) for i in range(n_series)])


def fleet_on_calendar(start_minute: int, fleet_start_minute: int, n_series: int = 120, days: int = 15,
                      seed: int = 0) -> np.ndarray:
    """The fleet, generated as if it began at `fleet_start_minute`, cut so that its first column
    falls on the same minute of the week as `start_minute`: its daily and weekly cycles then
    line up with the time features of a series that starts at `start_minute`."""
    fleet = make_fleet(n_series, days, seed)
    offset = (start_minute - fleet_start_minute) % (7 * DAY)
    return fleet[:, offset:]
