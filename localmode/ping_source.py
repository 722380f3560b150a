"""A local stand-in for a Knative PingSource: emits `dev.knative.sources.ping` events into the
local broker on the schedule in eventing/pingsource.yaml, on the loop's clock (a minute lasts
`minute_s` real seconds; 60 is real time, less is the accelerated demo). Schedules of the form
`* * * * *` and `*/N * * * *` are understood; anything else is refused, not guessed."""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import yaml
from cloudevents.core.v1.event import CloudEvent


class PingSource:
    def __init__(self, manifest: Path, publish: Callable[[CloudEvent], None], minute_s: float = 60.0):
        (spec,) = [d for d in yaml.safe_load_all(manifest.read_text()) if d and d.get("kind") == "PingSource"]
        self.name = spec["metadata"]["name"]
        self.namespace = spec["metadata"].get("namespace", "default")
        minute_field, *rest = spec["spec"]["schedule"].split()
        if rest != ["*", "*", "*", "*"] or not (minute_field == "*" or minute_field.startswith("*/")):
            raise ValueError(f"schedule {spec['spec']['schedule']!r}: only '* * * * *' and '*/N * * * *' are emulated")
        self.every = 1 if minute_field == "*" else int(minute_field[2:])
        self.content_type = spec["spec"].get("contentType", "application/json")
        self.data = spec["spec"].get("data", "")
        self.publish = publish
        self.minute_s = minute_s
        self.sent: list[CloudEvent] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def source(self) -> str:
        return f"/apis/v1/namespaces/{self.namespace}/pingsources/{self.name}"

    def event_at(self, minute: int) -> CloudEvent:
        data = json.loads(self.data) if self.content_type == "application/json" and self.data else self.data
        return CloudEvent(attributes={
            "type": "dev.knative.sources.ping", "source": self.source, "id": str(uuid.uuid4()),
            "time": datetime.fromtimestamp(minute * self.minute_s, timezone.utc),
            "datacontenttype": self.content_type}, data=data)

    def fire(self, minute: int) -> CloudEvent:
        event = self.event_at(minute)
        self.sent.append(event)
        self.publish(event)
        return event

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True, name="ping-source")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        minute = int(time.time() // self.minute_s) + 1
        while not self._stop.is_set():
            if self._stop.wait(max(0.0, minute * self.minute_s - time.time())):
                return
            if minute % self.every == 0:
                self.fire(minute)
            minute += 1
