"""The pool's control plane on its own port (POOL_CONTROL_PORT): the V2 model repository API
(index, load, unload) and the probes, nothing else, served by a small threaded WSGI server
inside the process that holds the pool (the pool's state is that process's).

Why a port and not a header or an Istio identity: Knative routes one port per Service (the
container's single declared port, through the queue-proxy), so whatever reaches a model's host
reaches the serving port only, and this port is reachable only at the pod's IP. A plain
Kubernetes Service selects the pool's pods on it and a NetworkPolicy admits only the scale
function's pods (serving/pool/infer-pool.yaml). An Istio AuthorizationPolicy on the pod would
see the activator or the gateway as the caller of every request that came through Knative, not
the scale function, and a shared header secret would be one more secret every tenant's path
must strip; a port that tenants' routes do not lead to needs neither.
"""

from __future__ import annotations

import logging
import threading
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from fncommon import json_log

if TYPE_CHECKING:
    from .pool import ModelPool

log = logging.getLogger("infer.control")


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args) -> None:  # the data plane logs what matters as JSON
        pass


def control_app(pool: "ModelPool"):
    from .app import WsgiApp, __version__
    from .dataplane import DataPlane

    return WsgiApp(DataPlane(pool, __version__, max_body_bytes=64 * 1024, control=True))


def serve_control(pool: "ModelPool", host: str, port: int) -> WSGIServer:
    """Start serving on a daemon thread; the server (its `shutdown()` stops it)."""
    server = make_server(host, port, control_app(pool), server_class=_Server, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name="pool-control", daemon=True).start()
    json_log.event(log, "control plane listening", host=host, port=server.server_address[1])
    return server
