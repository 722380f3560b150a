"""The whole per-service decision, pure: what the cluster carries now, the forecast, the policy and
the clock in; min-scale, window, the reason and every annotation to write out.

The scale function reads the cluster, calls `plan`, and writes what it says; the backtest scores
the very same call (training/controllers.PolicyController), so its numbers describe everything
the function decides: the current value taken from the Revisions, the holds and their reasons,
the cool-down clock (and what happens when it was lost), the window restore, the release of
Revisions that left traffic. No I/O here (.importlinter checks it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

from .annotations import ServicePolicy
from .fallback import FallbackSettings, Skill, forecast_helps, keepalive_forecast
from .min_scale_policy import MinuteForecast, decide

MIN_SCALE = "autoscaling.knative.dev/min-scale"
WINDOW = "autoscaling.knative.dev/window"
MANAGED = "predictive-scaling.io/min-scale"
"""Written beside every min-scale this function sets: marks the value as ours (to give back when
the Revision leaves traffic, and to hold a cool-down if the remembered state is lost)."""


@dataclass(frozen=True)
class ServiceView:
    """What the cluster says about one Knative Service, as read this event."""

    routed: Sequence[str]
    """Revisions with a non-zero traffic percent."""
    annotations: Mapping[str, Mapping[str, str]]
    """Revision name -> its annotations now: the routed ones, and any other of this Service."""
    template: Mapping[str, str] = field(default_factory=dict)
    """The Service template's own annotations (what a Revision leaving traffic gets back)."""


@dataclass(frozen=True)
class Plan:
    previous: int
    min_scale: int
    window_s: float | None
    """The lever's stable window (None: not shortened)."""
    window: str | None
    """The window annotation to carry: the lever's, else the Service's own (restored), else none."""
    reason: str
    raised_at_s: float | None
    writes: dict[str, dict[str, str | None]]
    """Routed Revision -> the merge-patch of annotations it needs (only where they differ)."""
    releases: dict[str, dict[str, str | None]]
    """Revision that left traffic carrying our min-scale -> the patch giving its own values back."""
    warm_up: bool
    """Raised from zero: one request must follow the write (the zero-scale trap)."""
    baseline: bool = False
    """Decided by the keep-alive fallback: the forecast's measured skill said it does not help."""


def plan(view: ServiceView, policy: ServicePolicy, forecast: Sequence[MinuteForecast] | None, now_s: float,
         raised_at_s: float | None, state_lost: bool = False, missing: str | None = None,
         stale_age_s: float | None = None, skill: Skill | None = None,
         observed: Sequence[float | None] | None = None, fallback: FallbackSettings | None = None,
         last_rps: float | None = None) -> Plan:
    """`missing` says why there is no forecast (None when there is one); `stale_age_s` is set
    when the event is too old to trust; `state_lost` when the remembered cool-down clock is gone.
    With `fallback` settings, a forecast whose measured `skill` says it does not help is replaced
    by the keep-alive over the `observed` minutes (oldest first; fallback.py); without observed
    minutes there is nothing to keep alive on, and the forecast is used. `last_rps`, the rate of
    the last observed minute (None: not observed), is what the busy-window lever reads besides
    the forecast (min_scale_policy.busy_trigger)."""
    live = {r: view.annotations.get(r) or {} for r in view.routed}
    current = max((int(a[MIN_SCALE]) for a in live.values() if (a.get(MIN_SCALE) or "").isdigit()), default=0)
    if state_lost and current > 0 and any(MANAGED in a for a in live.values()):
        raised_at_s = now_s  # never lower on lost state: hold as if just raised
    fresh = forecast is not None and stale_age_s is None
    baseline = False
    if fallback is not None and forecast and observed and not forecast_helps(skill, fallback):
        baseline = True
        forecast = keepalive_forecast(observed, len(forecast), fallback)
    decision = decide(forecast, policy.settings, current, now_s, raised_at_s, fresh, last_rps)
    reason = decision.reason
    if baseline and skill is not None and fallback is not None:
        reason = (f"{reason} (keep-alive {fallback.keepalive_minutes} min: forecast skill "
                  f"Brier {skill.brier_skill:+.2f}, MASE {skill.mase:.2f} over {skill.minutes} min)")
    if missing is not None:
        reason = f"hold at {current}: {missing}"
    elif stale_age_s is not None:
        reason = f"hold at {current}: forecast is {stale_age_s:.0f} s old"
    window = _window_value(decision.window_s) if policy.may_set_window else None
    if window is None and policy.user_window is not None:
        window = policy.user_window  # restoring means the Service's own setting
    desired = {MIN_SCALE: str(decision.min_scale), WINDOW: window}
    holding = decision.min_scale == current and not fresh
    writes: dict[str, dict[str, str | None]] = {}
    for revision, have in live.items():
        patch = {k: v for k, v in desired.items() if v != have.get(k)}
        if holding:
            patch.pop(MIN_SCALE, None)  # holding never rewrites what the cluster carries
        if patch:
            writes[revision] = {**patch, MANAGED: desired[MIN_SCALE]}
    releases = {revision: {MIN_SCALE: view.template.get(MIN_SCALE), WINDOW: view.template.get(WINDOW), MANAGED: None}
                for revision, annotations in sorted(view.annotations.items())
                if revision not in live and MANAGED in (annotations or {})}
    return Plan(current, decision.min_scale, decision.window_s, window, reason, decision.raised_at_s, writes,
                releases, warm_up=current == 0 and decision.min_scale > 0 and bool(writes), baseline=baseline)


def _window_value(seconds: float | None) -> str | None:
    return None if seconds is None else f"{seconds:g}s"
