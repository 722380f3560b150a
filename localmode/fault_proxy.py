"""An HTTP proxy that injects faults between a client and a real server (Prometheus here).

Not a mock: every request that is let through reaches the real server and its real answer goes
back. What it adds is what a network or a proxy in front of Prometheus does to requests: a delay
(a slow or overloaded Prometheus), a URL length limit (proxies commonly refuse URLs over 8 KiB
with 414), and failing the requests a predicate picks (with a status, or by closing the
connection). Used by the fault tests and by `make chaos`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import requests


@dataclass
class Seen:
    method: str
    path: str
    body: bytes
    status: int


@dataclass
class FaultProxy:
    upstream: str
    delay_s: float = 0.0
    max_url_bytes: int | None = None
    fail: Callable[[str, bytes], int | None] | None = None
    """(path, body) -> a status to answer instead of forwarding, or None to forward."""
    seen: list[Seen] = field(default_factory=list)
    url: str = ""

    def start(self) -> "FaultProxy":
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _relay(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = None
                if proxy.max_url_bytes is not None and len(self.path) > proxy.max_url_bytes:
                    status = 414
                elif proxy.fail is not None:
                    status = proxy.fail(self.path, body)
                if proxy.delay_s:
                    time.sleep(proxy.delay_s)
                if status is not None:
                    proxy.seen.append(Seen(self.command, self.path, body, status))
                    payload = b'{"status":"error","errorType":"proxy","error":"injected fault"}'
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "accept")}
                answer = requests.request(self.command, proxy.upstream + self.path, data=body or None,
                                          headers=headers, timeout=120)
                proxy.seen.append(Seen(self.command, self.path, body, answer.status_code))
                self.send_response(answer.status_code)
                self.send_header("Content-Type", answer.headers.get("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = _relay

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True, name="fault-proxy").start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
