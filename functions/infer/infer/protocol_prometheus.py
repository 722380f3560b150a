"""Prometheus' scrape endpoint; a scrape is not traffic."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import metrics
from .dataplane import Protocol, Route
from .http_io import Reply, Request

if TYPE_CHECKING:
    from .dataplane import DataPlane


def scrape(plane: DataPlane, request: Request) -> Reply:
    body, content_type = metrics.render()
    return Reply(200, body, content_type)


PROTOCOL = Protocol(name="metrics", routes=[Route("GET", "/metrics", scrape, traffic=False)])
