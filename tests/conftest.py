"""Shared fixtures: real Redis and Prometheus servers, trained example models, a running infer
server. Servers are real processes on free loopback ports, stopped at the end of the session."""

from __future__ import annotations


from tests.support.servers import (  # noqa: F401  (fixtures)
    free_port,
    infer_server_factory,
    models_dir,
    prometheus_server,
    redis_db,
    redis_server,
)
