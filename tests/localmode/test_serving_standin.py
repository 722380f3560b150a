"""The Serving stand-in honours `scale-to-zero-pod-retention-period` (the demo's keep-alive arm):
real infer processes, a real request through its gateway, the last replica kept that long."""

from __future__ import annotations


import requests

from localmode.processes import wait_until
from localmode.serving_standin import RETENTION, ServiceRuntime, ServingStandIn

MINUTE_S = 2  # the demo's accelerated minute: windows and the retention shrink alike (x 2/60)


def test_the_last_replica_stays_for_the_retention_period(models_dir, tmp_path):
    standin = ServingStandIn()
    try:
        runtimes = {}
        for name, annotations in (("plain", {}), ("kept", {RETENTION: "450s"})):  # 450 s -> 15 real s
            runtimes[name] = ServiceRuntime("models", name, models_dir / "wine.onnx", lambda a=annotations: a,
                                            MINUTE_S, tmp_path)
            standin.add(runtimes[name])
        assert runtimes["kept"].retention_s() == 15.0 and runtimes["plain"].retention_s() == 0.0
        for name in runtimes:
            response = requests.get(f"{standin.url}/v2/health/ready", headers={"Host": standin.host("models", name)},
                                    timeout=90)
            assert response.status_code == 200
        last = {name: r.last_request for name, r in runtimes.items()}
        wait_until(lambda: not runtimes["plain"].replicas, 60, "plain to reach zero")
        assert runtimes["kept"].replicas, "the retention period keeps the last replica"
        wait_until(lambda: not runtimes["kept"].replicas, 60, "kept to reach zero after its retention period")
        kept_for = runtimes["kept"].retired[-1].stopped - last["kept"]
        plain_for = runtimes["plain"].retired[-1].stopped - last["plain"]
        assert kept_for >= 15.0 > plain_for  # the stable window alone: 2 real s
    finally:
        standin.close()


def test_requests_held_during_a_cold_start_are_counted_by_the_replica(models_dir, tmp_path):
    """The gateway stamps X-Request-Start as an ingress proxy does, so the replica that became
    ready after a request arrived counts it in infer_cold_start_wait_seconds; a request to a warm
    replica is not counted."""
    from prometheus_client.parser import text_string_to_metric_families

    standin = ServingStandIn()
    try:
        runtime = ServiceRuntime("models", "wine", models_dir / "wine.onnx", dict, MINUTE_S, tmp_path)
        standin.add(runtime)
        body = {"inputs": [{"name": "input-0", "shape": [1, 13], "datatype": "FP64", "data": [0.0] * 13}]}
        host = {"Host": standin.host("models", "wine")}
        cold = requests.post(f"{standin.url}/v2/models/wine/infer", json=body, headers=host, timeout=90)
        warm = requests.post(f"{standin.url}/v2/models/wine/infer", json=body, headers=host, timeout=30)
        assert cold.status_code == warm.status_code == 200, cold.text

        def counted() -> tuple[float, float]:
            for text in runtime.scrape_all():
                for family in text_string_to_metric_families(text):
                    if family.name == "infer_cold_start_wait_seconds":
                        values = {s.name: s.value for s in family.samples}
                        return values["infer_cold_start_wait_seconds_count"], values["infer_cold_start_wait_seconds_sum"]
            return 0.0, 0.0

        count, waited = counted()
        assert count == 1.0 and runtime.stats.cold_requests == 1
        assert waited > 0.0  # the process start and model load it waited for
    finally:
        standin.close()
