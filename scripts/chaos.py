"""`make chaos`: the whole local loop (real Redis, Prometheus, functions under func-python, the
local broker, the API double with serving/'s RBAC, real infer processes) run through faults, one
after another, and a table of what each did to the scaling decisions.

Faults: Redis killed and restarted empty (wiped); every Prometheus target failing its scrapes;
forged events (a foreign source, a namespace the function does not manage); events dated in the
future; duplicate deliveries; two scale-function replicas receiving every forecast at once, with
older forecasts redelivered after newer ones. Then the model pool's faults (scripts/chaos_pool.py,
a second table): an unload storm from a foreign host, a model republished in place, oversized and
deep inputs at the concurrency limit (requests lost, 500s, peak memory against the manifest's limit),
and, with the scale function moving models (scripts/chaos_tiers.py), a dedicated Service deleted
while its model is routed to it and a mapping stuck not Ready (URLs left routed to nothing). Each fault lasts FAULT_TICKS minutes of the loop's
clock, then RECOVERY_TICKS minutes run clean.

Per fault: decisions held (hold-reason decisions for the opted-in service while the fault was
on), services wrongly lowered (a min-scale lowered on data that was missing, stale, forged or
from the future, or an older forecast's decision written after a newer one's; must be 0),
services left stuck warm (after recovery, a Revision whose min-scale differs from the loop's
newest decision, or any min-scale on the decoy Service the forged events aimed at; must be 0) and
events lost (deliveries that ended neither answered 2xx nor kept by the dead-letter sink; must
be 0). Minutes last MINUTE_S seconds (compressed time, as in the demo).

    make chaos        # about 4 minutes
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from cloudevents.core.v1.event import CloudEvent

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from localmode.loop import LocalLoop, ServicePlan  # noqa: E402
from localmode.processes import start_redis  # noqa: E402
from localmode.router import Trigger  # noqa: E402

MINUTE_S = 2
HISTORY = 1440
LIVE = 90
PERIOD = 10
FAULT_TICKS = 4
BLIND_TICKS = 8
"""Faults that blind the loop last longer than STALE_AFTER_MINUTES (5), so that holds happen."""
RECOVERY_TICKS = 4
MIN = "autoscaling.knative.dev/min-scale"
FORECAST_SOURCE = "/predictive-scaling/forecast"


@dataclass
class Row:
    fault: str
    held: int
    wrongly_lowered: int
    stuck_warm: int
    lost: int


class Chaos:
    def __init__(self, loop: LocalLoop):
        self.loop = loop
        self.minute = loop.start_minute - 2

    # -- the clock --------------------------------------------------------------------------
    def tick(self, extra=None) -> None:
        wait = self.minute * MINUTE_S - time.time()
        if wait > 0:
            time.sleep(wait)
        self.loop.ping.fire(self.minute)
        if extra:
            extra(self.minute)
        self.loop.broker.wait_idle(60)
        self.minute += 1

    # -- what happened ----------------------------------------------------------------------
    def genuine_forecasts(self) -> dict[str, dict]:
        """tick -> the wine entry of every forecast the real forecast function replied."""
        out = {}
        for event in list(self.loop.broker.received):
            if event.get_type() == "io.predictive-scaling.forecast.v1" and event.get_source() == FORECAST_SOURCE:
                data = event.get_data()
                for entry in data.get("services", []):
                    if entry["service"] == "models/wine" and "model" in data and data.get("model"):
                        out[data["tick"]] = entry
        return out

    def window(self, since: float) -> dict:
        loop = self.loop
        decisions = [d for d in self._decisions() if d["_at"] >= since]
        forecasts = self.genuine_forecasts()
        held = sum(d["reason"].startswith("hold") for d in decisions)
        wrong = 0
        newest_tick = ""
        for d in decisions:
            if d["applied"] and d["min_scale"] < d["previous_min_scale"]:
                genuine = forecasts.get(d["tick"])
                if genuine is None or genuine.get("status") != "ok":
                    wrong += 1
            if d["applied"] and newest_tick and d["tick"] < newest_tick:
                wrong += 1  # an older forecast's decision written after a newer one's
            newest_tick = max(newest_tick, d["tick"]) if d["applied"] else newest_tick
        decoy = loop.double.annotations("revisions", "tenant-b", "x-00001")
        wrong += int(decoy.get(MIN, "0") != "0")
        lost = 0
        by_delivery: dict[tuple[str, str], list] = {}
        for attempt in list(loop.broker.deliveries):
            by_delivery.setdefault((attempt.trigger, attempt.event_id), []).append(attempt)
        for attempts in by_delivery.values():
            delivered = any(isinstance(a.status, int) and 200 <= a.status < 300 and not a.dead_lettered for a in attempts)
            kept = any(a.dead_lettered and a.status == 202 for a in attempts)
            finished = delivered or any(a.dead_lettered for a in attempts)
            if finished and not (delivered or kept):
                lost += 1
        return {"held": held, "wrong": wrong, "lost": lost}

    def stuck_warm(self) -> int:
        decisions = self._decisions()
        live = self.loop.double.annotations("revisions", "models", "wine-00001").get(MIN, "0")
        newest = max(decisions, key=lambda d: d["tick"]) if decisions else None
        stuck = int(newest is not None and int(live) != newest["min_scale"] and not newest["dry_run"])
        decoy = self.loop.double.annotations("revisions", "tenant-b", "x-00001")
        return stuck + int(decoy.get(MIN, "0") != "0")

    def _decisions(self) -> list[dict]:
        out = []
        for raw in reversed(self.loop.store().lrange("scale:log:models/wine", 0, -1)):  # oldest first
            d = json.loads(raw)
            d["_at"] = datetime.strptime(d["tick"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()
            out.append(d)
        return out

    def lost_so_far(self) -> int:
        return self.window(0)["lost"]

    # -- one fault --------------------------------------------------------------------------
    def run(self, name: str, on, off, extra=None, ticks: int = FAULT_TICKS) -> Row:
        lost_before = self.lost_so_far()
        since = self.minute * MINUTE_S
        on()
        for _ in range(ticks):
            self.tick(extra)
        off()
        window = self.window(since)
        for _ in range(RECOVERY_TICKS):
            self.tick()
        lost = self.lost_so_far() - lost_before
        print(f"  {name}: done", file=sys.stderr, flush=True)
        return Row(name, window["held"], window["wrong"], self.stuck_warm(), lost)


def forecast_event(tick_minute: int, services: dict[str, float], source: str, event_id: str) -> CloudEvent:
    """A hostile forecast: its tick is half a minute after the real one of that minute, so that
    a decision it caused is told apart from the real forecast's (and would win the ordering)."""
    tick = datetime.fromtimestamp(tick_minute * MINUTE_S + MINUTE_S // 2, timezone.utc)
    entries = [{"service": name, "status": "ok", "minutes": [
        {"start": "", "point_rps": rps / 2, "upper_rps": rps, "p_any": 0.99 if rps else 0.0}] * 5}
        for name, rps in services.items()]
    return CloudEvent(attributes={"type": "io.predictive-scaling.forecast.v1", "source": source, "id": event_id,
                                  "time": tick, "datacontenttype": "application/json"},
                      data={"tick": tick.strftime("%Y-%m-%dT%H:%M:%SZ"), "model": {"version": "forged"},
                            "services": entries})


def main() -> None:
    from training.train_models import publish as publish_models
    from training.publish_forecaster import publish as publish_forecaster

    with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
        base = Path(tmp)
        models = ROOT / "models" if (ROOT / "models" / "manifest.json").exists() else base / "models"
        if models != ROOT / "models":
            publish_models(models)
        forecaster = ROOT / "models" / "forecaster"
        if not (forecaster / "manifest.json").exists():
            forecaster = base / "forecaster"
            publish_forecaster(forecaster)
        manifest = json.loads((models / "manifest.json").read_text())
        wine = next(a for a in manifest["artifacts"] if a["name"] == "wine")
        payload = {"model": "wine", "body": {"inputs": [{"name": "input-0", "shape": [1, 13], "datatype": "FP64",
                                                         "data": [float(x) for x in wine["example"][0]]}]}}
        counts = np.zeros(HISTORY + LIVE)
        counts[(np.arange(HISTORY + LIVE) - 3) % PERIOD == 0] = 20
        plans = [ServicePlan("wine", models / wine["path"], counts, HISTORY, payload)]
        with LocalLoop(base / "loop", plans, MINUTE_S, forecaster) as loop:
            loop.double.add_service("tenant-b", "x", {"predictive-scaling.io/enabled": "true"})
            rows = run_faults(loop)
        print("  the model pool's faults", file=sys.stderr, flush=True)
        from scripts.chaos_pool import print_pool_rows, run_pool_faults

        pool_rows = run_pool_faults(models, base)
        print("  the pool's routes (scale side)", file=sys.stderr, flush=True)
        from scripts.chaos_tiers import run_tier_faults

        pool_rows += run_tier_faults(models, base)
    print("\n| fault | decisions held | services wrongly lowered | services left stuck warm | events lost |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r.fault} | {r.held} | {r.wrongly_lowered} | {r.stuck_warm} | {r.lost} |")
    pool_held = print_pool_rows(pool_rows)
    bad = [r.fault for r in rows if r.wrongly_lowered or r.stuck_warm or r.lost]
    bad += [] if pool_held else ["the pool's faults (lost, 500s, peak over the limit, URLs routed to nothing or a missed move)"]
    print("\nall guarantees held" if not bad else f"\nguarantees broken under: {', '.join(bad)}")
    sys.exit(1 if bad else 0)


def run_faults(loop: LocalLoop) -> list[Row]:
    import threading

    chaos = Chaos(loop)
    threading.Thread(target=loop.replay, daemon=True).start()
    for _ in range(12):  # the cold tick, then the loop settles
        chaos.tick()
    rows = []

    def wipe_redis() -> None:
        port = loop.redis.port
        loop.redis.process.kill()
        loop.redis.process.wait()
        time.sleep(0.5)
        loop.redis = start_redis(loop.base / "redis-again", port=port)  # empty: everything wiped

    rows.append(chaos.run("Redis killed and wiped", wipe_redis, lambda: None, ticks=BLIND_TICKS))

    def targets_down() -> None:
        loop.standin.metrics_down = True

    def targets_up() -> None:
        loop.standin.metrics_down = False

    rows.append(chaos.run("Prometheus targets down", targets_down, targets_up, ticks=BLIND_TICKS))

    def forged(minute: int) -> None:
        loop.broker.publish(forecast_event(minute, {"models/wine": 0.0, "tenant-b/x": 50.0}, "/evil", f"evil-{minute}"))
        loop.broker.publish(forecast_event(minute, {"tenant-b/x": 50.0}, FORECAST_SOURCE, f"ns-{minute}"))
        ping = loop.ping.event_at(minute)
        loop.broker.publish(CloudEvent(attributes={**ping.get_attributes(), "source": "/evil", "id": f"p-{minute}"},
                                       data=ping.get_data()))

    rows.append(chaos.run("forged events", lambda: None, lambda: None, forged))

    def future(minute: int) -> None:
        loop.broker.publish(loop.ping.event_at(minute + 8 * 1440 * 60 // MINUTE_S))
        loop.broker.publish(forecast_event(minute + 30 * 1440 * 60 // MINUTE_S, {"models/wine": 0.0},
                                           FORECAST_SOURCE, f"future-{minute}"))

    rows.append(chaos.run("future-dated events", lambda: None, lambda: None, future))

    def duplicates(minute: int) -> None:
        loop.broker.wait_idle(30)
        mine = [e for e in list(loop.broker.received) if e.get_source() in (FORECAST_SOURCE, loop.ping.source)]
        for event in mine[-2:] * 2:
            loop.broker.publish(event)

    rows.append(chaos.run("duplicate deliveries", lambda: None, lambda: None, duplicates))

    second: dict[str, Trigger] = {}

    def two_replicas() -> None:
        from localmode.processes import start_function

        b_url, process = start_function(ROOT / "functions" / "scale", loop._scale_env(), loop.base / "scale-b.log")
        loop.functions["scale-b"] = process
        (original,) = [t for t in loop.broker.triggers if t.name == "scale-on-forecast"]
        second["b"] = Trigger(**{**original.__dict__, "name": "scale-on-forecast-replica-b", "subscriber": b_url})
        loop.broker.triggers.append(second["b"])

    def one_replica() -> None:
        loop.broker.triggers.remove(second["b"])

    def reorder(minute: int) -> None:
        loop.broker.wait_idle(30)
        older = [e for e in list(loop.broker.received)
                 if e.get_type() == "io.predictive-scaling.forecast.v1" and e.get_source() == FORECAST_SOURCE]
        if len(older) >= 2:
            loop.broker.publish(older[-2])  # an older forecast redelivered after the newer one

    rows.append(chaos.run("two scale replicas, interleaved and reordered", two_replicas, one_replica, reorder))
    return rows


if __name__ == "__main__":
    main()
