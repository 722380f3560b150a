"""The local broker delivers as Knative's broker does, over real HTTP: attribute filters, binary
mode, replies back into the broker, retries with backoff on retryable statuses only, a 2xx whose
body is not a CloudEvent counted as a failure, and dead-lettering with Knative's extensions."""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cloudevents.core.bindings.http import to_binary_event
from cloudevents.core.v1.event import CloudEvent

from localmode.ping_source import PingSource
from localmode.router import Delivery, LocalBroker, Trigger, iso_seconds, load_triggers
from tests.support.servers import ROOT


class Sink:
    """A real HTTP endpoint answering from a script of (status, reply event or raw body)."""

    def __init__(self, script=None):
        self.script = list(script or [])
        self.got: list[dict] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                sink.got.append({"headers": {k.lower(): v for k, v in self.headers.items()}, "body": body,
                                 "at": time.monotonic()})
                status, reply = sink.script.pop(0) if sink.script else (202, None)
                headers, payload = {}, b""
                if isinstance(reply, CloudEvent):
                    message = to_binary_event(reply)
                    headers, payload = message.headers, message.body
                elif isinstance(reply, bytes):
                    payload = reply
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sinks():
    made: list[Sink] = []

    def make(script=None) -> Sink:
        made.append(Sink(script))
        return made[-1]

    yield make
    for sink in made:
        sink.close()


def event(kind: str, event_id: str = "1") -> CloudEvent:
    return CloudEvent(attributes={"type": kind, "source": "/test", "id": event_id, "datacontenttype": "application/json"},
                      data={"n": 1})


def test_filters_deliver_binary_and_replies_go_back_into_the_broker(sinks):
    first, second, dead = sinks([(200, event("b.reply", "r1"))]), sinks(), sinks()
    broker = LocalBroker([
        Trigger("to-first", {"type": "a"}, first.url, Delivery(dead_letter=dead.url)),
        Trigger("to-second", {"type": "b.reply"}, second.url, Delivery(dead_letter=dead.url)),
    ])
    try:
        broker.publish(event("a"))
        broker.publish(event("unrouted"))
        assert broker.wait_idle(10)
        assert len(first.got) == 1 and first.got[0]["headers"]["ce-type"] == "a"
        assert json.loads(first.got[0]["body"]) == {"n": 1}  # binary mode: data is the body
        assert [g["headers"]["ce-id"] for g in second.got] == ["r1"]
        assert dead.got == []
    finally:
        broker.close()


def test_retryable_failures_are_retried_with_exponential_backoff_then_dead_lettered(sinks):
    failing, dead = sinks([(503, None), (429, None), (500, None)]), sinks()
    broker = LocalBroker([Trigger("t", {"type": "a"}, failing.url,
                                  Delivery(retry=2, backoff_delay_s=0.1, dead_letter=dead.url))])
    try:
        broker.publish(event("a", "x"))
        assert broker.wait_idle(10)
        assert len(failing.got) == 3
        gaps = [b["at"] - a["at"] for a, b in zip(failing.got, failing.got[1:])]
        assert 0.09 <= gaps[0] < 0.5 and 0.19 <= gaps[1] < 0.8  # 0.1 s, then 0.2 s
        (letter,) = dead.got
        assert letter["headers"]["ce-id"] == "x" and letter["headers"]["ce-knativeerrorcode"] == "500"
        assert letter["headers"]["ce-knativeerrordest"] == failing.url
    finally:
        broker.close()


def test_a_400_is_dead_lettered_at_once_and_a_non_event_2xx_body_counts_as_502(sinks):
    refusing, garbled, dead = sinks([(400, b'{"error": "no"}')]), sinks([(200, b"not an event"), (202, None)]), sinks()
    broker = LocalBroker([
        Trigger("refuse", {"type": "a"}, refusing.url, Delivery(retry=3, backoff_delay_s=0.01, dead_letter=dead.url)),
        Trigger("garble", {"type": "b"}, garbled.url, Delivery(retry=3, backoff_delay_s=0.01, dead_letter=dead.url)),
    ])
    try:
        broker.publish(event("a", "bad"))
        broker.publish(event("b", "ok-after-retry"))
        assert broker.wait_idle(10)
        assert len(refusing.got) == 1 and len(garbled.got) == 2
        (letter,) = dead.got
        assert letter["headers"]["ce-knativeerrorcode"] == "400"
        assert json.loads(base64.b64decode(letter["headers"]["ce-knativeerrordata"])) == {"error": "no"}
        assert [a.status for a in broker.deliveries if a.trigger == "garble"] == [502, 202]
    finally:
        broker.close()


def test_the_project_triggers_load_with_their_delivery_policies():
    urls = {"forecast": "http://f", "scale": "http://s", "deadletter": "http://d"}
    triggers = {t.name: t for t in load_triggers(ROOT / "eventing", urls.__getitem__)}
    assert triggers["forecast-on-ping"].filter["type"] == "dev.knative.sources.ping"
    assert triggers["scale-on-forecast"].subscriber == "http://s"
    assert triggers["scale-on-forecast"].delivery.retry == 4
    assert triggers["scale-on-forecast"].delivery.dead_letter == "http://d"
    assert iso_seconds("PT0.5S") == 0.5 and iso_seconds("PT1M30S") == 90


def test_ping_source_emits_what_knative_sends_on_the_loop_clock(tmp_path):
    got: list[CloudEvent] = []
    ping = PingSource(ROOT / "eventing" / "pingsource.yaml", got.append, minute_s=1)
    ping.start()
    time.sleep(2.5)
    ping.stop()
    assert 2 <= len(got) <= 3
    first = got[0]
    assert first.get_type() == "dev.knative.sources.ping"
    assert first.get_source() == "/apis/v1/namespaces/predictive-scaling/pingsources/every-minute"
    assert first.get_time().timestamp() % 1 == 0 and first.get_data() == {"job": "forecast"}
    bad = tmp_path / "ping.yaml"
    bad.write_text("apiVersion: sources.knative.dev/v1\nkind: PingSource\nmetadata: {name: x}\n"
                   "spec: {schedule: '0 9 * * 1'}\n")
    with pytest.raises(ValueError):
        PingSource(bad, got.append)  # a schedule the emulation cannot honour is refused, not guessed
