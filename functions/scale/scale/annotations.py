"""Per-service settings, read from the Knative Service's annotations (metadata.annotations): the
policy knobs of policy_knobs.KNOBS (the one table: annotation, environment default, parser,
meaning), plus `predictive-scaling.io/manage-window` and `predictive-scaling.io/dry-run`, and the
Service's own `min-scale` / `max-scale` as bounds.

A value that does not parse makes the service skipped, with the reason in the decision: a typo
must not turn into a scale-down.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .min_scale_policy import PolicySettings
from .policy_knobs import PREFIX, overrides_from_annotations, parse_window  # noqa: F401 - parse_window is part of this API
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


def service_policy(ksvc: dict, defaults: PolicySettings, dry_run_default: bool) -> ServicePolicy:
    annotations = ksvc.get("metadata", {}).get("annotations") or {}
    template = (((ksvc.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("annotations") or {}
    try:
        changes = overrides_from_annotations(annotations)
    except ValueError as exc:
        raise BadAnnotation(str(exc)) from None
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


def _flag(text: str | None, default: bool, name: str) -> bool:
    if text is None:
        return default
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise BadAnnotation(f"{PREFIX}{name}={text!r} is not true/false")
