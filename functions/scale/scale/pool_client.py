"""The scale function's calls to the model pool: the Open Inference Protocol's model repository
extension (as Triton and KServe speak it), through the pool Service's URL.

- `POST /v2/repository/index`: which models the answering pod has loaded (state READY);
- `POST /v2/repository/models/{name}/load`: load one before its requests come (a pre-load).

They go to the pool's control port (POOL_CONTROL_URL, by default the `<pool>-control` Kubernetes
Service that selects the pool's pods on port 8081, serving/pool/infer-pool.yaml): the repository
API is the control plane's, and the pool answers it nowhere else (its serving port, which model
hosts reach, gives 404). These reach one pool pod: the Service balances requests, not models. With more than one pod,
the others load a model on its first request anyway (an ONNX model loads in milliseconds), so a
pre-load makes the first pod warm for the model, which is what a pool scaled up from zero has.
With PRELOAD_GATEWAY set the calls go there with the pool's host as `Host:`
(local mode: its stand-in routes the repository paths to a replica's control port). Errors are one type carrying what went wrong; the
caller records them and tries again next tick (a failed pre-load never blocks a decision).
"""

from __future__ import annotations

from urllib.parse import quote, urlparse

import requests


class PoolError(RuntimeError):
    def __init__(self, status: int | None, message: str):
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status


class PoolClient:
    def __init__(self, timeout_s: float, gateway: str | None = None,
                 control_url: str = "http://{name}-control.{namespace}.svc.cluster.local:8081"):
        self.timeout_s = timeout_s
        self.gateway = gateway.rstrip("/") if gateway else None
        self.control_url = control_url
        self._session = requests.Session()
        self.calls = 0

    def close(self) -> None:
        self._session.close()

    def loaded(self, service_url: str) -> set[str]:
        """Names of the models the answering pool pod has loaded."""
        body = self._post(service_url, "/v2/repository/index", {"ready": True})
        if not isinstance(body, list):
            raise PoolError(None, "repository index is not a list")
        return {str(m.get("name")) for m in body if isinstance(m, dict)
                and str(m.get("state", "")).upper() == "READY"}

    def load(self, service_url: str, model: str) -> None:
        self._post(service_url, f"/v2/repository/models/{quote(model, safe='')}/load", {})

    def _post(self, service_url: str, path: str, payload: dict):
        headers = {"User-Agent": "predictive-scaling-preload", "Content-Type": "application/json"}
        url = control_url(self.control_url, service_url) + path
        if self.gateway:
            headers["Host"] = urlparse(service_url).netloc
            url = self.gateway + path
        self.calls += 1
        try:
            response = self._session.post(url, json=payload, headers=headers, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise PoolError(None, f"{type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            try:
                reason = response.json().get("error", response.text)
            except ValueError:
                reason = response.text
            raise PoolError(response.status_code, str(reason)[:200])
        try:
            return response.json() if response.content else None
        except ValueError:
            raise PoolError(response.status_code, "reply is not JSON") from None


def control_url(template: str, service_url: str) -> str:
    """The pool's control URL from its Service URL (`http://<name>.<namespace>.<domain>`)."""
    labels = (urlparse(service_url).hostname or "").split(".")
    name, namespace = labels[0], labels[1] if len(labels) > 1 else ""
    return template.format(name=name, namespace=namespace).rstrip("/")
