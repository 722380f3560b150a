"""The scale function's Scaler in this process, against the Kubernetes API double and a real
Redis: the writers' pool keeps at most API_WRITERS patches in flight and resolves every 409 by
re-reading; the cyclic garbage collector is paused while an event is handled and back after it,
whatever the outcome."""

from __future__ import annotations

import gc
import threading
import time

from scale.decision import MANAGED, MIN_SCALE
from scale.scaler import Scaler
from scale.settings import ScaleSettings

from localmode.kube_api_double import KubeApiDouble
from tests.scale.conftest import TICK0, forecast, minutes

SERVING = "serving.knative.dev"
OPT_IN = {"predictive-scaling.io/enabled": "true"}


class CountingDouble(KubeApiDouble):
    """The API double, counting the PATCHes it is serving at once (each held 10 ms, so that the
    writers overlap)."""

    def __init__(self) -> None:
        super().__init__()
        self.in_flight = 0
        self.most_in_flight = 0
        self._counting = threading.Lock()

    def _serve(self, http, method: str) -> None:
        if method != "PATCH":
            super()._serve(http, method)
            return
        with self._counting:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            time.sleep(0.01)
            super()._serve(http, method)
        finally:
            with self._counting:
                self.in_flight -= 1


def scaler_for(double: KubeApiDouble, redis_url: str, **env: str) -> Scaler:
    return Scaler(ScaleSettings.from_env({
        "REDIS_URL": redis_url, "KUBERNETES_API_URL": double.url, "MAX_FORECAST_AGE_SECONDS": "0",
        "WARMUP": "false", "COOLDOWN_SECONDS": "0", "BURST_RISK": "off", "MANAGED_NAMESPACES": "ns",
        "ACCEPTED_SOURCES": "*", **env}))


def test_at_most_api_writers_patches_in_flight_and_every_conflict_resolved(redis_db):
    double = CountingDouble()
    double.add_namespace("ns")
    names = [f"svc-{k:03d}" for k in range(90)]  # four chunks of the writers' pool
    for name in names:
        double.add_service("ns", name, OPT_IN)

    def someone_else_writes_every_revision() -> None:
        for name in names:
            double.touch(SERVING, "revisions", "ns", f"{name}-00001", {"someone/else": "1"})

    double.before_next_patch(someone_else_writes_every_revision)  # every patch in flight or queued: 409
    scaler = scaler_for(double, redis_db, API_WRITERS="3")
    try:
        outcome = scaler.handle(forecast(TICK0, {f"ns/{n}": minutes(15, 0.99) for n in names}, "e-1"))
        assert outcome.status == 200
        data = outcome.reply.get_data()
        assert data["skipped"] == [] and sorted(d["service"] for d in data["decisions"]) == [f"ns/{n}" for n in names]
        assert all(d["applied"] for d in data["decisions"])
        assert 2 <= double.most_in_flight <= 3
        patches = double.calls("PATCH")
        conflicts = [c for c in patches if c.status == 409]
        assert conflicts and len(patches) == len(names) + len(conflicts)  # each conflict: one more patch
        decided = {d["service"]: d["min_scale"] for d in data["decisions"]}
        assert set(decided.values()) == {2}  # 15 req/s at the default pod capacity
        for name in names:
            annotations = double.annotations("revisions", "ns", f"{name}-00001")
            assert annotations[MIN_SCALE] == annotations[MANAGED] == str(decided[f"ns/{name}"])
            assert annotations["someone/else"] == "1"  # the other writer's annotation kept
    finally:
        scaler.close()
        double.close()


def test_the_collector_is_paused_while_an_event_is_handled_and_back_after(redis_db):
    double = KubeApiDouble()
    double.add_namespace("ns")
    double.add_service("ns", "svc", OPT_IN)
    seen: list[bool] = []
    double.before_next_patch(lambda: seen.append(gc.isenabled()))  # in this process: the same collector
    scaler = scaler_for(double, redis_db, API_WRITERS="1")
    try:
        assert gc.isenabled()
        assert scaler.handle(forecast(TICK0, {"ns/svc": minutes(15, 0.99)}, "e-1")).status == 200
        assert seen == [False] and gc.isenabled()
        # a refused event (400) and an event while the collector was already off: left as found
        assert scaler.handle(forecast(TICK0 + 1, {"no-slash": minutes(15, 0.99)}, "e-2")).status == 400
        assert gc.isenabled()
        gc.disable()
        try:
            assert scaler.handle(forecast(TICK0 + 2, {"ns/svc": minutes(15, 0.99)}, "e-3")).status == 200
            assert not gc.isenabled()
        finally:
            gc.enable()
    finally:
        scaler.close()
        double.close()
