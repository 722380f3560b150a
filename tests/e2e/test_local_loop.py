"""The whole loop end to end, on one machine: real Redis, real Prometheus, the functions under
func-python, events through the local broker as routed by eventing/'s Triggers, the scale
function's kubernetes client against the API double, and real infer processes (real cold starts)
behind the Serving stand-in. Minutes last one second here (MINUTE_SECONDS=1).

The traffic is a constructed periodic job (a burst every 10 minutes, silence between) with a
day of history: this test checks the loop's mechanics (raise before the burst, lower after the
idle, hold without data, dead-lettering, surviving a restart), not forecast quality, which the
walk-forward backtest measures on the real traces."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import requests
from cloudevents.core.bindings.http import to_binary_event
from cloudevents.core.v1.event import CloudEvent

from localmode.loop import LocalLoop, ServicePlan
from tests.support.servers import ROOT

MINUTE_S = 1
HISTORY = 1440
LIVE = 24
PERIOD = 10
BURST_AT = (3, 13, 23)  # live minutes with a burst


def periodic(n: int, offset: int) -> np.ndarray:
    counts = np.zeros(n)
    counts[(np.arange(n) - offset) % PERIOD == 0] = 20
    return counts


@pytest.fixture(scope="module")
def loop(tmp_path_factory, models_dir, forecaster_root_e2e):
    counts = periodic(HISTORY + LIVE, HISTORY + BURST_AT[0])
    example = [list(map(float, row)) for row in
               __import__("json").loads((models_dir / "manifest.json").read_text())["artifacts"][0]["example"]]
    payload = {"model": "wine", "body": {"inputs": [{"name": "input-0", "shape": [1, 13], "datatype": "FP64",
                                                     "data": example[0]}]}}
    plans = [ServicePlan("wine", models_dir / "wine.joblib", counts, HISTORY, payload),
             ServicePlan("wine-kpa", models_dir / "wine.joblib", counts, HISTORY, payload, opted_in=False)]
    with LocalLoop(tmp_path_factory.mktemp("loop"), plans, MINUTE_S, forecaster_root_e2e) as running:
        yield running


@pytest.fixture(scope="module")
def forecaster_root_e2e(tmp_path_factory):
    from training.publish_forecaster import publish

    root = tmp_path_factory.mktemp("forecaster")
    publish(root)
    return root


def test_the_loop(loop):
    wine = loop.plans[0]
    replay = threading.Thread(target=loop.replay, daemon=True)
    replay.start()
    ticks = {}

    def tick(minute: int) -> None:
        wait = minute * MINUTE_S - time.time()
        if wait > 0:
            time.sleep(wait)
        ticks[minute] = time.time()
        loop.ping.fire(minute)
        assert loop.broker.wait_idle(20)

    start = loop.start_minute
    # the first tick reads a day of history (day-sized queries): done before the replay starts
    tick(start - 2)
    # 1. raised before the first burst arrives, and lowered after the idle that follows
    for minute in range(start - 1, start + BURST_AT[0] + 5):
        tick(minute)
    writes = loop.min_scale_writes(wine)
    burst_time = (start + BURST_AT[0]) * MINUTE_S
    raised = [t for t, v in writes if int(v) >= 1 and t < burst_time]
    assert raised, (f"min-scale was not raised before the burst at {burst_time}: {writes}; ticks {ticks}; "
                    f"decisions {loop.decisions('models/wine')[:4]}; forecasts {loop.forecasts('models/wine')[:4]}")
    lowered = [t for t, v in writes if v == "0" and t > burst_time]
    assert lowered, f"min-scale was not lowered after the burst: {writes}"
    # the KPA-only arm is never touched
    assert not [c for c in loop.double.requests if c.name and c.name.startswith("wine-kpa") and c.method == "PATCH"]

    # 2. Prometheus stopped mid-run: forecasts become holds; min-scale is never lowered
    minute = start + BURST_AT[0] + 5
    while minute < start + BURST_AT[1]:  # up to the tick that covers the second burst
        tick(minute)
        minute += 1
    current = loop.double.annotations("revisions", "models", "wine-00001")["autoscaling.knative.dev/min-scale"]
    assert int(current) >= 1, f"expected the second burst to be pre-warmed: {loop.decisions('models/wine')[-4:]}"
    writes_before = len(loop.min_scale_writes(wine))
    loop.prometheus.stop()
    for minute in range(minute, minute + 4):
        tick(minute)
    assert len(loop.min_scale_writes(wine)) == writes_before
    assert loop.double.annotations("revisions", "models", "wine-00001")["autoscaling.knative.dev/min-scale"] == current
    held = loop.decisions("models/wine")[-3:]
    assert all("no data" in d["reason"] and d["min_scale"] == int(current) for d in held), held

    # 3. the scale function killed and restarted between two ticks: the next forecast finds it
    # down, the broker redelivers with backoff until the new instance takes it, and the new
    # instance continues from the state in Redis: one more decision, none lost, none doubled
    decisions_before = len(loop.decisions("models/wine"))
    # The Trigger's budget is 0.5+1+2+4 s of backoff; a function start on a loaded 2-core machine
    # can take longer. Stretch the broker's backoff (same retries, same order) so the test checks
    # the redelivery, not the machine's speed.
    loop.broker.time_scale = 4.0
    loop.functions["scale"].kill()
    loop.functions["scale"].wait()
    loop.ping.fire(minute + 1)
    time.sleep(0.3)
    loop.restart_function("scale")
    assert loop.broker.wait_idle(30)
    after = loop.decisions("models/wine")
    assert len(after) == decisions_before + 1 and after[-1]["previous_min_scale"] == int(current)
    to_scale = [d for d in loop.broker.deliveries if d.trigger == "scale-on-forecast"]
    assert any(d.attempt > 0 and d.status == 200 for d in to_scale), "expected a redelivery to the new instance"
    assert not any(d.dead_lettered for d in to_scale)

    # 4. a malformed event ends in the dead-letter sink, with the reason
    # (from the forecast function's source: the scale Trigger filters on it, so a foreign source
    # never even reaches the function)
    bad = CloudEvent(attributes={"type": "io.predictive-scaling.forecast.v1", "source": "/predictive-scaling/forecast",
                                 "id": "bad-1",
                                 "datacontenttype": "application/json"}, data={"tick": "yesterday"})
    message = to_binary_event(bad)
    assert requests.post(loop.broker.url, data=message.body, headers=message.headers, timeout=5).status_code == 202
    assert loop.broker.wait_idle(20)
    letters = [d for d in loop.dead_letters() if d["attributes"]["id"] == "bad-1"]
    assert letters and letters[0]["attributes"]["knativeerrorcode"] == "400"
    assert letters[0]["attributes"]["knativeerrordest"] == loop.function_urls["scale"]
    replay.join(timeout=60)
    errors = [s for s in loop.sent if s.status != 200]
    assert not errors, errors[:3]
    assert ROOT.exists()
