"""The one table of policy knobs: each knob's PolicySettings field, its environment variable (the
fleet-wide default), its annotation (the per-Service override), how it parses, its default and
what it means. The settings (settings.py), the annotation reader (annotations.py) and the
settings reference (`markdown_table`, docs/reference/settings.md, checked by a test) all come from this table, so a knob is
added, renamed or documented in one place.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from .min_scale_policy import PolicySettings

PREFIX = "predictive-scaling.io/"


def positive(text: str) -> float:
    value = _finite(text)
    if value <= 0:
        raise ValueError(f"{text!r} must be > 0")
    return value


def non_negative(text: str) -> float:
    value = _finite(text)
    if value < 0:
        raise ValueError(f"{text!r} must be >= 0")
    return value


def count(text: str) -> int:
    if not str(text).strip().isdigit():
        raise ValueError(f"{text!r} is not a non-negative integer")
    return int(text)


def at_least_one(text: str) -> int:
    value = count(text)
    if value < 1:
        raise ValueError(f"{text!r} must be >= 1")
    return value


def parse_window(text: str) -> float | None:
    if text.strip().lower() in ("off", "none", ""):
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(s|m)?", text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a duration like 6s")
    seconds = float(match[1]) * (60 if match[2] == "m" else 1)
    if not 6 <= seconds <= 3600:
        raise ValueError(f"{text!r} is outside Knative's 6s..1h for a stable window")
    return seconds


def burst_risk(text: str) -> float | None:
    if text.strip().lower() == "off":
        return None
    value = _finite(text)
    if not 0.0 < value < 1.0:
        raise ValueError(f"{text!r} must be between 0 and 1 (exclusive), or off")
    return value


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    return value


@dataclass(frozen=True)
class Knob:
    field: str
    env: str | None
    annotation: str | None
    """Without the `predictive-scaling.io/` prefix."""
    parse: Callable[[str], Any]
    default: Any
    shown: str
    """The default as the table shows it."""
    doc: str


KNOBS: tuple[Knob, ...] = (
    Knob("capacity_rps", "POD_CAPACITY_RPS", "pod-capacity", positive, 10.0, "10",
         "requests/s one pod serves (the infer benchmark: ~300 at p99 < 10 ms per vCPU)"),
    Knob("cold_start_cost_pod_s", "COLD_START_COST_POD_SECONDS", "cold-start-cost", non_negative, 300.0, "300",
         "pod-seconds one avoided cold start is worth: the cost knob"),
    Knob("min_scale", None, "min", count, 0, "0",
         "min-scale never set below this (nor below the Service's own `min-scale`)"),
    Knob("max_scale", "MAX_SCALE", "max", at_least_one, 10, "10",
         "min-scale never set above this (nor above the Service's own `max-scale`)"),
    Knob("cooldown_s", "COOLDOWN_SECONDS", "cooldown", non_negative, 60.0, "60",
         "seconds before a raised min-scale may be lowered"),
    Knob("idle_window_s", "IDLE_WINDOW", "idle-window", parse_window, None, "`off`",
         "stable window while idle is forecast, e.g. `6s` (the second lever); `off`: never touch the window"),
    Knob("busy_window_s", "BUSY_WINDOW", "busy-window", parse_window, None, "`off`",
         "stable window while busy is forecast (both covered minutes: P(any) >= 0.99 and a point rate of at least "
         "70% of one pod) or the last observed minute had that rate, e.g. `15s`, so that Knative follows a step up "
         "in seconds; `off`: never touch the window"),
    Knob("burst_risk", "BURST_RISK", None, burst_risk, 0.1, "0.1",
         "accepted chance that a forecast minute has a second busier than its pods serve (Poisson within the "
         "minute); `off`: size pods for the mean rate"),
)


def defaults_from_env(env: Mapping[str, str]) -> PolicySettings:
    """The fleet-wide defaults; raises ValueError naming the variable."""
    values = {}
    for knob in KNOBS:
        raw = env.get(knob.env) if knob.env else None
        if raw is None or raw == "":
            values[knob.field] = knob.default
            continue
        try:
            values[knob.field] = knob.parse(raw)
        except ValueError as exc:
            raise ValueError(f"{knob.env}: {exc}") from None
    return PolicySettings(**values)


def overrides_from_annotations(annotations: Mapping[str, str]) -> dict[str, Any]:
    """The per-Service overrides; raises ValueError naming the annotation."""
    changes = {}
    for knob in KNOBS:
        if knob.annotation and PREFIX + knob.annotation in annotations:
            try:
                changes[knob.field] = knob.parse(annotations[PREFIX + knob.annotation])
            except ValueError as exc:
                raise ValueError(f"{PREFIX}{knob.annotation}: {exc}") from None
    return changes


def markdown_table() -> str:
    lines = ["| annotation | environment (fleet default) | default | meaning |", "|---|---|---|---|"]
    for knob in KNOBS:
        annotation = f"`{PREFIX}{knob.annotation}`" if knob.annotation else "(none)"
        env = f"`{knob.env}`" if knob.env else "(none)"
        lines.append(f"| {annotation} | {env} | {knob.shown} | {knob.doc} |")
    return "\n".join(lines)
