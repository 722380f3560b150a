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
