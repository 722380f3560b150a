"""Configuration from environment variables, read the same way by every function: an unset or
empty variable takes its documented default; a set one must parse, or the function refuses to
start with a `SettingsError` naming the variable, the rule and the value (a typo in a manifest
should stop a rollout, not run with a default nobody chose).
"""

from __future__ import annotations

import math
from typing import Mapping

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


class SettingsError(ValueError):
    """A configuration value that cannot be used: the function does not start serving."""


def text(env: Mapping[str, str], name: str, default: str) -> str:
    return (env.get(name) or "").strip() or default


def optional(env: Mapping[str, str], name: str) -> str | None:
    return (env.get(name) or "").strip() or None


def number(env: Mapping[str, str], name: str, default: float, minimum: float | None = None,
           integer: bool = False, positive: bool = False) -> float:
    """A finite number (an integer when `integer`), at least `minimum`, above 0 when `positive`."""
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    kind = "an integer" if integer else "a number"
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be {kind}, not {raw!r}") from None
    if positive and not value > 0:  # NaN included
        raise SettingsError(f"{name} must be positive, not {value}")
    if not math.isfinite(value):
        raise SettingsError(f"{name} must be a finite number, not {raw!r}")
    if minimum is not None and value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, not {value}")
    return value


def whole(env: Mapping[str, str], name: str, default: int, minimum: int | None = None, positive: bool = False) -> int:
    return int(number(env, name, default, minimum, integer=True, positive=positive))


def flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in TRUE:
        return True
    if raw in FALSE:
        return False
    raise SettingsError(f"{name} must be one of {'/'.join(TRUE)} or {'/'.join(FALSE)}, not {raw!r}")


def names(env: Mapping[str, str], name: str, default: str, allow_empty: bool = False) -> tuple[str, ...]:
    """A comma-separated list (blanks dropped)."""
    raw = env.get(name)
    found = tuple(i.strip() for i in (default if raw is None else raw).split(",") if i.strip())
    if not found and not allow_empty:
        raise SettingsError(f"{name} must list at least one value")
    return found


def sha256(env: Mapping[str, str], name: str) -> str | None:
    """A pinned digest: 64 hex digits (case-insensitive), or None when unset."""
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return None
    if len(raw) != 64 or any(c not in "0123456789abcdef" for c in raw):
        raise SettingsError(f"{name} must be 64 hex digits (a sha256)")
    return raw
