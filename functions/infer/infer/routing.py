"""Which model a request is for when its path names none (MLflow's /invocations in the pool).

In order: the `X-Model-Name` header; else the first DNS label of `X-Forwarded-Host` (the host
the client called, when a proxy rewrote Host on the way) or of `Host`, when it is the name of a
served model: users reach each model at `<model>.<namespace>.<domain>` whichever Service serves
it, so the host name the client called says the model. Pure: headers in, a name out.
"""

from __future__ import annotations

from typing import Container, Mapping, Protocol, Sequence

HEADER = "x-model-name"


def explicit_name(headers: Mapping[str, str]) -> str | None:
    name = headers.get(HEADER, "").strip()
    return name or None


def host_label(host: str) -> str | None:
    """`wine.models.example.com:8080` -> `wine`; the first host of a list (the client's)."""
    host = host.split(",", 1)[0].strip()
    if host.startswith("["):  # an IPv6 literal names no model
        return None
    host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    label = host.split(".", 1)[0].strip().lower()
    return label or None


class LabelLookup(Protocol):
    """DNS label -> model name: a dict, or the pool's identity map (its names are labels)."""

    def __contains__(self, label: object) -> bool: ...

    def __getitem__(self, label: str) -> str: ...


def model_name(headers: Mapping[str, str], served: Container[str], by_label: LabelLookup) -> str | None:
    """The served model the request names, or None (X-Model-Name naming an unknown model
    included: the caller tells that apart with `explicit_name`). `by_label`: lower-case DNS
    label -> model name (host names are case-insensitive, model names are not)."""
    given = explicit_name(headers)
    if given is not None:
        return given if given in served else None
    for header in ("x-forwarded-host", "host"):
        label = host_label(headers.get(header, ""))
        if label is not None and label in by_label:
            return by_label[label]
    return None


def listing(names: Sequence[str], limit: int = 20) -> str:
    """Model names for a message, at most `limit` of them (a pool may hold thousands)."""
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"


def how_to_choose(headers: Mapping[str, str], served: Sequence[str]) -> str:
    host = headers.get("x-forwarded-host") or headers.get("host") or "none"
    return (f"this server serves several models ({listing(served)}) and the request names none: call the model's "
            f"own host (<model>.<namespace>.<domain>; this request's host {host!r} names no model), send the "
            f"header X-Model-Name: <model>, or use /v2/models/<model>/infer or /v1/models/<model>:predict")
