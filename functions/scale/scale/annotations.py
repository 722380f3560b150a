"""Per-service settings, read from the Knative Service's annotations (metadata.annotations).

| annotation | default | meaning |
|---|---|---|
| predictive-scaling.io/pod-capacity | POD_CAPACITY_RPS | requests/s one pod serves |
| predictive-scaling.io/cold-start-cost | COLD_START_COST_POD_SECONDS | pod-seconds one avoided cold start is worth (the cost knob) |
| predictive-scaling.io/min | 0 | min-scale never set below this (nor below the Service's own min-scale) |
| predictive-scaling.io/max | MAX_SCALE | min-scale never set above this (nor above the Service's max-scale) |
| predictive-scaling.io/cooldown | COOLDOWN_SECONDS | seconds before a raised min-scale may be lowered |
| predictive-scaling.io/idle-window | IDLE_WINDOW | stable window while idle is forecast, e.g. `6s`; `off` (the default) never touches it |
| predictive-scaling.io/manage-window | false | allow the idle window even where the Service sets its own `window` |
| predictive-scaling.io/dry-run | DRY_RUN | decide and report, patch nothing |

A value that does not parse makes the service skipped, with the reason in the decision: a typo
must not turn into a scale-down.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

from .min_scale_policy import PolicySettings

PREFIX = "predictive-scaling.io/"
WINDOW = "autoscaling.knative.dev/window"
MIN_SCALE = "autoscaling.knative.dev/min-scale"
MAX_SCALE = "autoscaling.knative.dev/max-scale"


class BadAnnotation(ValueError):
    pass


@dataclass(frozen=True)
class ServicePolicy:
    settings: PolicySettings
    dry_run: bool
    user_window: str | None
    """The `window` the Service's template sets (the value to restore), if any."""
    may_set_window: bool


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


def service_policy(ksvc: dict, defaults: PolicySettings, dry_run_default: bool) -> ServicePolicy:
    annotations = ksvc.get("metadata", {}).get("annotations") or {}
    template = (((ksvc.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("annotations") or {}
    changes: dict = {}
    if PREFIX + "pod-capacity" in annotations:
        changes["capacity_rps"] = _positive(annotations[PREFIX + "pod-capacity"], "pod-capacity")
    if PREFIX + "cold-start-cost" in annotations:
        changes["cold_start_cost_pod_s"] = _positive(annotations[PREFIX + "cold-start-cost"], "cold-start-cost", zero=True)
    if PREFIX + "min" in annotations:
        changes["min_scale"] = _count(annotations[PREFIX + "min"], "min")
    if PREFIX + "max" in annotations:
        changes["max_scale"] = _count(annotations[PREFIX + "max"], "max")
    if PREFIX + "cooldown" in annotations:
        changes["cooldown_s"] = _positive(annotations[PREFIX + "cooldown"], "cooldown", zero=True)
    if PREFIX + "idle-window" in annotations:
        try:
            changes["idle_window_s"] = parse_window(annotations[PREFIX + "idle-window"])
        except ValueError as exc:
            raise BadAnnotation(f"{PREFIX}idle-window: {exc}") from None
    dry_run = _flag(annotations.get(PREFIX + "dry-run"), dry_run_default, "dry-run")
    manage = _flag(annotations.get(PREFIX + "manage-window"), False, "manage-window")
    settings = dataclasses.replace(defaults, **changes)
    service_min = template.get(MIN_SCALE)
    if service_min is not None and str(service_min).isdigit():
        settings = dataclasses.replace(settings, min_scale=max(settings.min_scale, int(service_min)))
    service_max = template.get(MAX_SCALE)
    if service_max is not None and str(service_max).isdigit() and int(service_max) > 0:
        settings = dataclasses.replace(settings, max_scale=min(settings.max_scale, int(service_max)))
    if settings.min_scale > settings.max_scale:
        raise BadAnnotation(f"{PREFIX}min={settings.min_scale} exceeds the maximum {settings.max_scale}")
    user_window = template.get(WINDOW)
    return ServicePolicy(settings, dry_run, user_window, user_window is None or manage)


def _positive(text: str, name: str, zero: bool = False) -> float:
    try:
        value = float(text)
    except ValueError:
        raise BadAnnotation(f"{PREFIX}{name}={text!r} is not a number") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        raise BadAnnotation(f"{PREFIX}{name}={text!r} must be {'>= 0' if zero else '> 0'}")
    return value


def _count(text: str, name: str) -> int:
    if not str(text).isdigit():
        raise BadAnnotation(f"{PREFIX}{name}={text!r} is not a non-negative integer")
    return int(text)


def _flag(text: str | None, default: bool, name: str) -> bool:
    if text is None:
        return default
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise BadAnnotation(f"{PREFIX}{name}={text!r} is not true/false")
