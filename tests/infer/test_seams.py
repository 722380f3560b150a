"""The seams of the inference server, as declared: both registries are the one `Registry`
protocol (mypy checks their signatures: tests/test_types.py), the pool's slots move through an
enum of states, and a request is matched to its route once even when the adapter first asks
whether answering may block."""

from __future__ import annotations

import asyncio
import json

import numpy as np
from sklearn.datasets import load_wine

from infer.app import AsgiApp, build_pool
from infer.dataplane import DataPlane
from infer.model import ModelRegistry
from infer.pool import ModelPool, SlotState
from infer.registry import Registry
from infer.settings import InferSettings
from tests.infer.test_pool import make_repository


def _asgi(app: AsgiApp, method: str, path: str, body: bytes = b"") -> tuple[int, dict]:
    sent: list[dict] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict:
        return messages.pop(0)

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path,
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]}
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], json.loads(sent[1]["body"] or b"{}")


def test_both_registries_are_the_registry_protocol():
    assert Registry in ModelRegistry.__mro__ and Registry in ModelPool.__mro__
    assert DataPlane.__annotations__["models"] == "Registry"  # typed by the protocol, not one implementation


def test_a_pool_request_is_matched_once_and_its_slot_goes_through_the_states(models_dir, tmp_path, monkeypatch):
    repo = make_repository(models_dir, tmp_path / "repo")
    wsgi, pool = build_pool(InferSettings.from_env({"MODEL_REPOSITORY": str(repo)}))
    assert pool.verify()
    plane = wsgi.plane
    matches = []
    match = plane._match
    monkeypatch.setattr(plane, "_match", lambda request: matches.append(request.path) or match(request))
    assert pool.index()[0]["state"] == SlotState.UNAVAILABLE.value == "UNAVAILABLE"

    rows = load_wine().data[:2].tolist()
    body = json.dumps({"inputs": [{"name": "input-0", "shape": [2, 13], "datatype": "FP64",
                                   "data": rows}]}).encode()
    status, reply = _asgi(AsgiApp(plane), "POST", "/v2/models/wine/infer", body)
    assert status == 200 and np.asarray(reply["outputs"][0]["data"]).shape[0] == 2
    assert matches == ["/v2/models/wine/infer"]  # may_block (a pool loads on demand) and handle: one match
    assert {row["name"]: row["state"] for row in pool.index()}["wine"] == "READY"
    assert all(isinstance(slot.state, SlotState) for slot in pool._slots.values())
