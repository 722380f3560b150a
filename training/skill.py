"""Forecast skill against the simple baselines, and reliability of P(any). Pure numpy.

Every figure the backtests print about the forecaster is relative to what a platform engineer
would get without it: the point forecast's absolute error against the seasonal naive one's on
the same minutes (MASE: below 1 the forecaster helps), and the Brier score of P(any) against
each series' own walk-forward base rate (the share of its minutes with a request so far: a
constant forecast that needs no model). Brier skill = 1 - Brier / Brier of the base rate: above
0 the forecaster helps, 0 is the base rate, negative is worse than it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from forecast import quality

RELIABILITY_EDGES = (0.0, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)
"""Bins of predicted P(any): narrow at the bottom, where a sparse fleet's minutes are."""


def own_base_rate(counts: np.ndarray, minutes: np.ndarray) -> np.ndarray:
    """For each minute m of `minutes`, the share of the series' minutes before m (with data)
    that had a request: known when m is forecast. Before any data: 0."""
    filled = np.nan_to_num(counts)
    valid = ~np.isnan(counts)
    active = np.concatenate(([0], np.cumsum((filled > 0) & valid)))
    seen = np.concatenate(([0], np.cumsum(valid)))
    m = np.asarray(minutes)
    return np.where(seen[m] > 0, active[m] / np.maximum(seen[m], 1), 0.0)


@dataclass(frozen=True)
class Skill:
    mae: float
    mae_naive: float
    brier: float
    brier_base_rate: float
    minutes: int

    @property
    def mase(self) -> float:
        return quality.mase(self.mae, self.mae_naive)

    @property
    def brier_skill(self) -> float:
        return quality.brier_skill(self.brier, self.brier_base_rate)


def skill(point: np.ndarray, naive: np.ndarray, p_any: np.ndarray, base_rate: np.ndarray, actual: np.ndarray) -> Skill:
    """Skill over the minutes where `actual` is known (NaN: a gap, not scored)."""
    ok = ~np.isnan(actual)
    a = actual[ok]
    hit = (a > 0).astype(float)
    return Skill(mae=float(np.mean(np.abs(point[ok] - a))) if ok.any() else float("nan"),
                 mae_naive=float(np.mean(np.abs(naive[ok] - a))) if ok.any() else float("nan"),
                 brier=float(np.mean((p_any[ok] - hit) ** 2)) if ok.any() else float("nan"),
                 brier_base_rate=float(np.mean((base_rate[ok] - hit) ** 2)) if ok.any() else float("nan"),
                 minutes=int(ok.sum()))


def pooled(parts: list[Skill]) -> Skill:
    """The fleet's skill: errors summed over every service's minutes (so a busy service's
    absolute errors weigh as much as its requests do), then the same ratios."""
    n = sum(p.minutes for p in parts)
    if n == 0:
        return Skill(float("nan"), float("nan"), float("nan"), float("nan"), 0)

    def mean(field: str) -> float:
        return sum(getattr(p, field) * p.minutes for p in parts if p.minutes) / n

    return Skill(mean("mae"), mean("mae_naive"), mean("brier"), mean("brier_base_rate"), n)


def reliability(p_any: np.ndarray, hit: np.ndarray, edges=RELIABILITY_EDGES) -> list[dict]:
    """The calibration curve: per bin of predicted P(any), how many minutes, the mean
    prediction and the share of them that had a request (a calibrated P(any) has the two equal)."""
    p = np.asarray(p_any, dtype=float)
    y = np.asarray(hit, dtype=float)
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, len(edges) - 2)
    out = []
    for b in range(len(edges) - 1):
        inside = which == b
        if inside.any():
            out.append({"lo": edges[b], "hi": edges[b + 1], "minutes": int(inside.sum()),
                        "predicted": float(p[inside].mean()), "observed": float(y[inside].mean())})
    return out


def calibration_error(curve: list[dict]) -> float:
    """Expected calibration error: |predicted - observed| per bin, weighted by its minutes."""
    n = sum(b["minutes"] for b in curve)
    return sum(abs(b["predicted"] - b["observed"]) * b["minutes"] for b in curve) / n if n else float("nan")


def format_reliability(curve: list[dict]) -> str:
    """One line: `[lo-hi) predicted -> observed (minutes)` per bin."""
    return "; ".join(f"[{b['lo']:g}-{b['hi']:g}) {b['predicted']:.3f}->{b['observed']:.3f} ({b['minutes']})" for b in curve)


def fleet_skill(counts: np.ndarray, point: np.ndarray, p_any: np.ndarray, first: int) -> dict:
    """Next-minute skill of every series of a fleet (rows of `counts`; `point[i, m]` and
    `p_any[i, m]` forecast minute m) over minutes `first`..: per series, and pooled over the
    fleet; how many series the forecast helps (MASE < 1, Brier skill > 0); the reliability of
    P(any) pooled over every series-minute."""
    from training.controllers import seasonal_naive_table

    n = counts.shape[1]
    minutes = np.arange(first, n)
    per, hits, probs = [], [], []
    for i in range(len(counts)):
        naive = seasonal_naive_table(counts[i], first, n, 1).point[:, 0]
        per.append(skill(point[i, first:].astype(float), naive, p_any[i, first:].astype(float),
                         own_base_rate(counts[i], minutes), counts[i, first:]))
        ok = ~np.isnan(counts[i, first:])
        hits.append(counts[i, first:][ok] > 0)
        probs.append(p_any[i, first:][ok].astype(float))
    fleet = pooled(per)
    curve = reliability(np.concatenate(probs), np.concatenate(hits))
    mase = np.array([s.mase for s in per])
    bss = np.array([s.brier_skill for s in per])
    return {"mase": fleet.mase, "brier": fleet.brier, "brier_base_rate": fleet.brier_base_rate,
            "brier_skill": fleet.brier_skill, "calibration_error": calibration_error(curve), "reliability": curve,
            "series": len(per), "series_mase_below_1": int(np.sum(mase < 1)), "series_with_mase": int(np.sum(np.isfinite(mase))),
            "series_brier_skill_above_0": int(np.sum(bss > 0)), "series_with_brier_skill": int(np.sum(np.isfinite(bss))),
            "median_series_brier_skill": float(np.nanmedian(bss)) if np.isfinite(bss).any() else float("nan")}


def format_fleet_skill(s: dict) -> str:
    return (f"forecast skill (next minute, every model, scored days): MASE vs seasonal naive {s['mase']:.3f} pooled, "
            f"< 1 for {s['series_mase_below_1']}/{s['series_with_mase']} models; Brier P(any) {s['brier']:.5f} vs own base "
            f"rate {s['brier_base_rate']:.5f}: Brier skill {s['brier_skill']:+.3f} pooled, > 0 for "
            f"{s['series_brier_skill_above_0']}/{s['series_with_brier_skill']} models (median {s['median_series_brier_skill']:+.3f})\n"
            f"reliability of P(any) (predicted -> observed, minutes), calibration error {s['calibration_error']:.4f}: "
            f"{format_reliability(s['reliability'])}")


def rolling_skill(table_point: np.ndarray, table_p_any: np.ndarray, naive_point: np.ndarray, counts: np.ndarray,
                  first: int, window: int = 60, settle: int = 1, history: int = 10080) -> dict[str, np.ndarray]:
    """The skill the forecast function would have sent at each decision minute (forecast/quality.py,
    walk-forward): for decision minute m (first + i), the next-minute forecasts of the minutes
    [m - settle - window, m - settle) that are known (no gap), scored against what came; the base
    rate of each scored minute is the series' share of active minutes over the `history` minutes
    read before it. Arrays over i: `brier_skill`, `mase` (NaN: undefined) and `minutes` scored."""
    n = len(table_point)
    minutes = np.arange(first, first + n)
    actual = counts[minutes]
    ok = ~np.isnan(actual)
    a = np.nan_to_num(actual)
    hit = (a > 0).astype(float)
    filled = np.nan_to_num(counts)
    valid = ~np.isnan(counts)
    active_c = np.concatenate(([0], np.cumsum((filled > 0) & valid)))
    seen_c = np.concatenate(([0], np.cumsum(valid)))
    lo = np.clip(minutes - history, 0, None)
    seen = seen_c[minutes] - seen_c[lo]
    base = np.where(seen > 0, (active_c[minutes] - active_c[lo]) / np.maximum(seen, 1), 0.0)
    parts = [np.where(ok, np.abs(table_point - a), 0.0), np.where(ok, np.abs(naive_point - a), 0.0),
             np.where(ok, (table_p_any - hit) ** 2, 0.0), np.where(ok, (base - hit) ** 2, 0.0), ok.astype(float)]
    sums = [np.concatenate(([0.0], np.cumsum(p))) for p in parts]
    end = np.clip(np.arange(n) - settle, 0, n)
    start = np.clip(end - window, 0, n)
    mae, mae_naive, brier, brier_base, k = (s[end] - s[start] for s in sums)
    with np.errstate(invalid="ignore", divide="ignore"):
        mase = np.where(mae_naive > 1e-9, mae / np.where(mae_naive > 1e-9, mae_naive, 1.0), np.nan)
        bss = np.where(brier_base > 1e-9, 1.0 - brier / np.where(brier_base > 1e-9, brier_base, 1.0), np.nan)
    return {"brier_skill": bss, "mase": mase, "minutes": k.astype(int)}
