"""The zero-scale trap: a Revision at zero whose autoscaler restarted ignores a new min-scale
until a request arrives. So raising a service from 0 also sends it one request. It only has to
reach the activator (which then scales the Revision), so it is sent in the background with a
short timeout and never delays the decision. With WARMUP_GATEWAY set, it goes to the ingress
gateway with the Service's host in the `Host:` header, the way users curl through Istio."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from urllib.parse import urlparse

import requests


class WarmUp:
    def __init__(self, path: str, timeout_s: float, gateway: str | None = None):
        self.path = path
        self.timeout_s = timeout_s
        self.gateway = gateway.rstrip("/") if gateway else None
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="warmup")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def send(self, service_url: str) -> Future:
        return self._pool.submit(self._get, service_url)

    def _get(self, service_url: str) -> int | str:
        headers = {"User-Agent": "predictive-scaling-warmup", "X-Predictive-Warmup": "1"}
        url = service_url.rstrip("/") + self.path
        if self.gateway:
            headers["Host"] = urlparse(service_url).netloc
            url = self.gateway + self.path
        try:
            return requests.get(url, headers=headers, timeout=self.timeout_s).status_code
        except requests.RequestException as exc:
            return type(exc).__name__  # a timeout is fine: the request reached the activator
