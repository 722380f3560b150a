"""`make verify-cluster` against the Kubernetes API double and local stand-ins: a real Redis holding
what the functions record, a real Prometheus back-filled with the preset's series, a real infer
server as the ingress. A healthy install passes every check; a broken one is told, in words, what
is wrong. (The project has not run it on a real cluster: this is as close as this machine gets.)"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
import redis

from localmode.kube_api_double import KubeApiDouble
from localmode.processes import start_prometheus
from tests.support.servers import ROOT
from localmode.prometheus_backfill import create_blocks, write_openmetrics

SCRIPT = ROOT / "scripts" / "verify_cluster.py"
CRDS = {"services.serving.knative.dev": "v1", "revisions.serving.knative.dev": "v1",
        "domainmappings.serving.knative.dev": "v1beta1", "brokers.eventing.knative.dev": "v1",
        "triggers.eventing.knative.dev": "v1", "pingsources.sources.knative.dev": "v1"}
READY = {"conditions": [{"type": "Ready", "status": "True"}]}


def _install(double: KubeApiDouble, operator: bool = False) -> None:
    """What a stock Knative + the README's install sequence leave in the API."""
    for name, version in CRDS.items():
        double.put_object("apiextensions.k8s.io", "customresourcedefinitions", None, {
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": name},
            "spec": {"versions": [{"name": "v1alpha1", "served": False}, {"name": version, "served": True}]}})
    if operator:
        double.add_namespace("knative-serving", {})
        double.put_object("apps", "deployments", "knative-serving", {"metadata": {
            "name": "controller", "namespace": "knative-serving", "labels": {"app.kubernetes.io/version": "1.21.0"}}})

    def config_map(name, data):
        double.put_object("", "configmaps", "knative-serving", {"metadata": {"name": name, "namespace": "knative-serving"},
                                                                "data": data})

    config_map("config-observability", {"request-metrics-protocol": "prometheus", "metrics-protocol": "prometheus"})
    config_map("config-domain", {"example.com": ""})
    config_map("config-features", {"kubernetes.podspec-init-containers": "enabled"})
    for name in ("forecast", "scale", "deadletter"):
        double.add_service("predictive-scaling", name, {"networking.knative.dev/visibility": "cluster-local"})
    for plural, group, name in (("brokers", "eventing.knative.dev", "default"),
                                ("pingsources", "sources.knative.dev", "every-minute"),
                                ("triggers", "eventing.knative.dev", "forecast-on-ping"),
                                ("triggers", "eventing.knative.dev", "scale-on-forecast")):
        double.put_object(group, plural, "predictive-scaling", {
            "metadata": {"name": name, "namespace": "predictive-scaling"}, "status": READY})
    double.add_service("models", "infer-wine", {"predictive-scaling.io/enabled": "true"},
                       template_labels={"predictive-scaling.io/enabled": "true"})
    double.add_domain_mapping("models", "wine.models.example.com", "infer-wine",
                              labels={"predictive-scaling.io/model": "wine"})


def _record_loop(url: str, at: datetime) -> None:
    """What one tick leaves in Redis: the forecast function's and the scale function's latest."""
    client = redis.Redis.from_url(url)
    tick = at.replace(second=0, microsecond=0).isoformat().replace("+00:00", "Z")
    client.hset("forecast:latest", "models/infer-wine", json.dumps({"tick": tick, "service": "models/infer-wine",
                                                                   "status": "ok"}))
    client.hset("scale:latest", "models/infer-wine", json.dumps({"tick": tick, "service": "models/infer-wine",
                                                                "previous": 0, "min_scale": 1}))


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    """A real Prometheus holding the last three hours of infer-wine's knative-1.21 series."""
    base = tmp_path_factory.mktemp("verify-prometheus")
    end_minute = int(time.time() // 60) - 5
    counts = np.full(180, 3.0)
    with (base / "history.om").open("w") as out:
        write_openmetrics(out, {"models/infer-wine": counts}, end_minute - 180, presets=("knative-1.21",))
    create_blocks(base / "history.om", base / "data")
    server = start_prometheus(base)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ingress(models_dir, infer_server_factory):
    return infer_server_factory(models_dir / "wine.onnx", workers=1)


def _verify(double, *extra: str) -> tuple[int, str]:
    result = subprocess.run([sys.executable, str(SCRIPT), "--api-url", double.url, "--pool", *extra],
                            capture_output=True, text=True, timeout=120)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, result.stdout


def test_a_healthy_install_passes_every_check(redis_db, prometheus, ingress):
    double = KubeApiDouble()
    try:
        _install(double)
        _record_loop(redis_db, datetime.now(timezone.utc))
        code, out = _verify(double, "--redis-url", redis_db, "--prometheus-url", prometheus.url,
                            "--ingress-url", ingress.url)
    finally:
        double.close()
    assert code == 0, out
    assert "FAIL" not in out and "--  " not in out  # every check ran
    for words in ("CRD domainmappings.serving.knative.dev", "1.21 (knative-serving namespace)", "function forecast",
                  "Trigger scale-on-forecast", "forecast ", "decision ", "host wine.models.example.com",
                  "mapping wine.models.example.com", "1 managed Service(s) have knative-1.21 series"):
        assert words in out, (words, out)


def test_an_operator_install_is_read_from_the_controller_deployment():
    double = KubeApiDouble()
    try:
        _install(double, operator=True)
        code, out = _verify(double)
    finally:
        double.close()
    assert "1.21 (controller Deployment)" in out, out
    assert code == 0 and out.count("not checked") == 3, out  # Redis, ingress and Prometheus not given


def test_a_broken_install_is_told_what_is_wrong_in_words(redis_db, prometheus, ingress):
    double = KubeApiDouble()
    try:
        _install(double)
        del double.objects[("apiextensions.k8s.io", "customresourcedefinitions", None, "pingsources.sources.knative.dev")]
        double.put_object("", "configmaps", "knative-serving", {
            "metadata": {"name": "config-observability", "namespace": "knative-serving"}, "data": {}})
        double.put_object("", "configmaps", "knative-serving", {
            "metadata": {"name": "config-features", "namespace": "knative-serving"}, "data": {}})
        forecast = double.objects[("serving.knative.dev", "services", "predictive-scaling", "forecast")]
        forecast["status"]["conditions"] = [{"type": "Ready", "status": "False", "reason": "RevisionMissing",
                                             "message": "Revision forecast-00001 failed: container exited"}]
        double.add_service("models", "infer-diabetes", {"predictive-scaling.io/enabled": "true"})
        double.add_domain_mapping("models", "diabetes.models.example.com", "infer-diabetes", claimed=False)
        _record_loop(redis_db, datetime.now(timezone.utc) - timedelta(minutes=30))  # the loop stopped
        redis.Redis.from_url(redis_db).lpush("deadletter:events", "{}")
        code, out = _verify(double, "--redis-url", redis_db, "--prometheus-url", prometheus.url,
                            "--ingress-url", ingress.url)
    finally:
        double.close()
    assert code == 1
    for words in ("missing: is Knative Eventing installed?",
                  "request-metrics-protocol none", "kubernetes.podspec-init-containers disabled",
                  "Revision forecast-00001 failed: container exited",
                  "no forecast in the last 3 min", "1 event(s) in the dead-letter list",
                  "no decision in the last 3 min",
                  "kubectl apply -k serving/pool/domain-claims/",
                  "no knative-1.21 series in the last hour for models/infer-diabetes"):
        assert words in out, (words, out)
    assert "ok   mapping wine.models.example.com" in out  # what works is still said to work
