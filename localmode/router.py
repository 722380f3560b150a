"""A local stand-in for a Knative Broker: it reads the Triggers (and the Broker's delivery
defaults) in eventing/ and delivers events over real HTTP as the broker would.

- Ingress: POST a CloudEvent (binary or structured) to `url`; 202 back, delivery is asynchronous.
- Filter: a Trigger matches when every attribute in `spec.filter.attributes` equals the event's.
- Delivery: binary mode to the subscriber, at least once. Knative retries 5xx, 404, 408, 409,
  429 and network errors, `retry` times, waiting backoffDelay * 2^n (exponential) or
  backoffDelay * n (linear); a 2xx reply that is a CloudEvent goes back into the broker; a
  2xx with a body that is not a CloudEvent counts as a 502 (retried). What still fails, and any
  other status (a 400), goes to the dead-letter sink with the `knativeerrordest`,
  `knativeerrorcode` and `knativeerrordata` extensions Knative adds.
- Every delivery attempt is logged as one JSON line and kept in `deliveries` for tests.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import requests
import yaml
from cloudevents.core.bindings.http import HTTPMessage, from_http_event, to_binary_event
from cloudevents.core.v1.event import CloudEvent

log = logging.getLogger("localmode.router")
RETRYABLE = {404, 408, 409, 429}


@dataclass(frozen=True)
class Delivery:
    retry: int = 0
    backoff_policy: str = "exponential"
    backoff_delay_s: float = 0.2
    timeout_s: float = 30.0
    dead_letter: str | None = None


@dataclass(frozen=True)
class Trigger:
    name: str
    filter: dict[str, str]
    subscriber: str
    delivery: Delivery


@dataclass
class Attempt:
    trigger: str
    event_id: str
    event_type: str
    target: str
    attempt: int
    status: int | str
    dead_lettered: bool = False


def iso_seconds(text: str) -> float:
    match = re.fullmatch(r"PT(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?", text)
    if not match or not any(match.groups()):
        raise ValueError(f"unsupported ISO 8601 duration {text!r}")
    h, m, s = (float(g) if g else 0.0 for g in match.groups())
    return h * 3600 + m * 60 + s


def _delivery(spec: dict | None, fallback: Delivery, resolve: Callable[[str], str]) -> Delivery:
    if not spec:
        return fallback
    sink = ((spec.get("deadLetterSink") or {}).get("ref") or {}).get("name")
    return Delivery(
        retry=int(spec.get("retry", fallback.retry)),
        backoff_policy=spec.get("backoffPolicy", fallback.backoff_policy),
        backoff_delay_s=iso_seconds(spec["backoffDelay"]) if "backoffDelay" in spec else fallback.backoff_delay_s,
        timeout_s=iso_seconds(spec["timeout"]) if "timeout" in spec else fallback.timeout_s,
        dead_letter=resolve(sink) if sink else fallback.dead_letter,
    )


def load_triggers(eventing: Path, resolve: Callable[[str], str]) -> list[Trigger]:
    """Triggers of eventing/*.yaml; `resolve` maps a subscriber's Service name to a URL."""
    documents = [d for p in sorted(eventing.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]
    brokers = {d["metadata"]["name"]: _delivery(d.get("spec", {}).get("delivery"), Delivery(), resolve)
               for d in documents if d.get("kind") == "Broker"}
    triggers = []
    for doc in (d for d in documents if d.get("kind") == "Trigger"):
        spec = doc["spec"]
        broker_delivery = brokers.get(spec.get("broker", "default"), Delivery())
        triggers.append(Trigger(doc["metadata"]["name"], dict((spec.get("filter") or {}).get("attributes") or {}),
                                resolve(spec["subscriber"]["ref"]["name"]),
                                _delivery(spec.get("delivery"), broker_delivery, resolve)))
    return triggers


class LocalBroker:
    def __init__(self, triggers: list[Trigger], time_scale: float = 1.0):
        self.triggers = triggers
        self.time_scale = time_scale
        self.deliveries: list[Attempt] = []
        self.received: list[CloudEvent] = []
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="broker")
        self._lock = threading.Lock()
        self._pending = 0
        self._idle = threading.Condition(self._lock)
        broker = self

        class Ingress(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    event = from_http_event(HTTPMessage(headers=headers, body=body))
                except Exception as exc:  # noqa: BLE001 - anything unparsable is a 400, as at the broker
                    self.send_response(400)
                    payload = json.dumps({"error": f"not a CloudEvent: {exc}"}).encode()
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                broker.publish(event)
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Ingress)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def publish(self, event: CloudEvent) -> None:
        """Into the broker: fan out to every matching Trigger, asynchronously."""
        with self._lock:
            self.received.append(event)
        attributes = {k: str(v) for k, v in event.get_attributes().items()}
        for trigger in self.triggers:
            if all(attributes.get(k) == v for k, v in trigger.filter.items()):
                with self._lock:
                    self._pending += 1
                self._pool.submit(self._deliver, trigger, event)

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Until every delivery (and the replies they caused) has finished."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def _deliver(self, trigger: Trigger, event: CloudEvent) -> None:
        try:
            self._attempts(trigger, event)
        except Exception:  # noqa: BLE001 - a bug here must not stop the broker; it is logged
            log.exception("delivery crashed")
        finally:
            with self._idle:
                self._pending -= 1
                self._idle.notify_all()

    def _attempts(self, trigger: Trigger, event: CloudEvent) -> None:
        delivery = trigger.delivery
        message = to_binary_event(event)
        status: int | str = "not sent"
        body = b""
        for attempt in range(delivery.retry + 1):
            try:
                response = requests.post(trigger.subscriber, data=message.body, headers=message.headers,
                                         timeout=delivery.timeout_s * self.time_scale)
                status, body = response.status_code, response.content
                if 200 <= status < 300:
                    reply = self._reply(response)
                    if reply is not False:
                        self._record(trigger, event, attempt, status)
                        if reply is not None:
                            self.publish(reply)
                        return
                    status = 502  # a 2xx whose body is not a CloudEvent
            except requests.RequestException as exc:
                status = type(exc).__name__
            self._record(trigger, event, attempt, status)
            if isinstance(status, int) and status < 500 and status not in RETRYABLE:
                break  # 400 and the like: not worth a retry
            if attempt < delivery.retry:
                factor = 2 ** attempt if delivery.backoff_policy == "exponential" else attempt + 1
                time.sleep(delivery.backoff_delay_s * factor * self.time_scale)
        self._dead_letter(trigger, event, status, body)

    @staticmethod
    def _reply(response: requests.Response) -> CloudEvent | None | bool:
        """The reply event; None for an empty body; False for a body that is no CloudEvent."""
        headers = {k.lower(): v for k, v in response.headers.items()}
        if not response.content and "ce-type" not in headers:
            return None
        try:
            return from_http_event(HTTPMessage(headers=headers, body=response.content))
        except Exception:  # noqa: BLE001
            return False

    def _dead_letter(self, trigger: Trigger, event: CloudEvent, status: int | str, body: bytes) -> None:
        sink = trigger.delivery.dead_letter
        if sink is None:
            log.error(json.dumps({"msg": "event dropped: no dead-letter sink", "trigger": trigger.name,
                                  "ce_id": event.get_id()}))
            return
        attributes = dict(event.get_attributes())
        attributes["knativeerrordest"] = trigger.subscriber
        attributes["knativeerrorcode"] = str(status)
        if body:
            attributes["knativeerrordata"] = base64.b64encode(body[:1024]).decode()
        lettered = CloudEvent(attributes=attributes, data=event.get_data())
        message = to_binary_event(lettered)
        try:
            code: int | str = requests.post(sink, data=message.body, headers=message.headers, timeout=10).status_code
        except requests.RequestException as exc:
            code = type(exc).__name__
        self._record(trigger, event, -1, code, dead_lettered=True)

    def _record(self, trigger: Trigger, event: CloudEvent, attempt: int, status: int | str,
                dead_lettered: bool = False) -> None:
        target = trigger.delivery.dead_letter if dead_lettered else trigger.subscriber
        entry = Attempt(trigger.name, event.get_id(), event.get_type(), str(target), attempt, status, dead_lettered)
        with self._lock:
            self.deliveries.append(entry)
        log.info(json.dumps({"msg": "dead-lettered" if dead_lettered else "delivered", **entry.__dict__}))
