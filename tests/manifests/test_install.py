"""A real cluster install works as written: each item a user following the install page would
have stopped at, checked against what Knative, func, Prometheus and kustomize do with the files.

Knative's behaviour comes from localmode/knative_rules.py (each rule names its upstream file);
func's from tests/support/func_deploy.py; Prometheus' relabelling from tests/support/relabel.py;
kustomize is the real `kubectl kustomize`."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile

import pytest
import requests
import yaml

from localmode import knative_rules
from localmode.kube_api_double import KubeApiDouble
from tests.support.func_deploy import render_service
from tests.support.manifests import load_documents, validate_resource
from tests.support.relabel import kept, podmonitor_targets
from tests.support.servers import ROOT

FUNCTIONS = ("deadletter", "forecast", "scale", "infer")
INSTALL = (ROOT / "docs" / "install.md").read_text()
DOCS = {str(p.relative_to(ROOT)): p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]}
ALL_DOCS = "\n".join(DOCS.values())


def _kustomize(folder) -> list[dict]:
    result = subprocess.run(["kubectl", "kustomize", str(folder)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def _install_section() -> str:
    start = INSTALL.index("## The install sequence")
    return INSTALL[start:]


# -- func deploy: no autoscaling annotation on the Service's metadata ------------------------------

@pytest.mark.parametrize("name", FUNCTIONS)
def test_the_service_func_deploy_creates_is_accepted_by_knative(name):
    """func copies deploy.annotations to the Service's metadata too; Knative refuses autoscaling
    keys there. The rendered Service must pass the webhook, the CRD schema and the API double."""
    service = render_service(ROOT / "functions" / name / "func.yaml")
    assert knative_rules.service_denial(service) is None
    validate_resource(service)
    template = service["spec"]["template"]["metadata"]
    if name in ("forecast", "scale"):
        assert template["annotations"]["autoscaling.knative.dev/min-scale"] == "1"
        assert template["annotations"]["autoscaling.knative.dev/max-scale"] == "1"
    if name == "deadletter":
        assert template["annotations"]["autoscaling.knative.dev/min-scale"] == "1"
    if name == "infer":
        assert template["annotations"]["autoscaling.knative.dev/min-scale"] == "0"
        assert template["labels"]["predictive-scaling.io/enabled"] == "true"
    double = KubeApiDouble()
    try:
        namespace = service["metadata"].get("namespace", "models")
        reply = requests.post(f"{double.url}/apis/serving.knative.dev/v1/namespaces/{namespace}/services",
                              json=service, timeout=5)
        assert reply.status_code == 201, reply.text
        revision = double.get("serving.knative.dev", "revisions", namespace, f"{service['metadata']['name']}-00001")
        assert revision["metadata"]["annotations"] == template["annotations"]
    finally:
        double.close()


def test_the_double_refuses_what_the_knative_webhook_refuses():
    double = KubeApiDouble()
    try:
        base = f"{double.url}/apis/serving.knative.dev/v1/namespaces/models"
        service = {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
                   "metadata": {"name": "s", "labels": {"predictive-scaling.io/enabled": "true"},
                                "annotations": {"autoscaling.knative.dev/min-scale": "1"}},
                   "spec": {"template": {"metadata": {"labels": {"team": "a"}},
                                         "spec": {"containers": [{"image": "x"}]}}}}
        refused = requests.post(f"{base}/services", json=service, timeout=5)
        assert refused.status_code == 400
        assert "spec.template.metadata.annotations" in refused.json()["message"]
        del service["metadata"]["annotations"]
        service["spec"]["template"]["metadata"]["annotations"] = {knative_rules.RETENTION: "2h"}
        assert requests.post(f"{base}/services", json=service, timeout=5).status_code == 400
        service["spec"]["template"]["metadata"]["annotations"] = {knative_rules.RETENTION: "30m"}
        assert requests.post(f"{base}/services", json=service, timeout=5).status_code == 201
        # labels reach the Revision from the template only, never from the Service's metadata
        labels = double.get("serving.knative.dev", "revisions", "models", "s-00001")["metadata"]["labels"]
        assert labels["team"] == "a" and labels["serving.knative.dev/service"] == "s"
        assert "predictive-scaling.io/enabled" not in labels
        patch = {"headers": {"Content-Type": "application/merge-patch+json"}, "timeout": 5}
        for value, status in (("61m", 400), ("1h", 200), ("0s", 200), ("-1s", 400)):
            body = {"metadata": {"annotations": {knative_rules.RETENTION: value}}}
            assert requests.patch(f"{base}/revisions/s-00001", data=json.dumps(body), **patch).status_code == status, value
        for value, status in (("5s", 400), ("6s", 200), ("1h", 200), ("2h", 400)):
            body = {"metadata": {"annotations": {knative_rules.WINDOW: value}}}
            assert requests.patch(f"{base}/revisions/s-00001", data=json.dumps(body), **patch).status_code == status, value
        # an update that puts an autoscaling key on the Service's own metadata is refused too
        body = {"metadata": {"annotations": {"autoscaling.knative.dev/max-scale": "3"}}}
        assert requests.patch(f"{base}/services/s", data=json.dumps(body), **patch).status_code == 400
    finally:
        double.close()


def test_no_shipped_service_carries_autoscaling_annotations_on_its_metadata():
    services = [d for p in (ROOT / "serving").rglob("*.yaml") for d in load_documents(p) if d.get("kind") == "Service"
                and d["apiVersion"].startswith("serving.knative.dev")]
    assert len(services) == 3
    for service in services:
        assert knative_rules.service_denial(service) is None, service["metadata"]["name"]


# -- the forecast function finds its forecaster under every builder --------------------------------

def test_the_forecaster_is_found_under_the_package_wherever_the_builder_put_it(tmp_path, monkeypatch):
    (func,) = load_documents(ROOT / "functions" / "forecast" / "func.yaml")
    root = {e["name"]: e["value"] for e in func["run"]["envs"]}["FORECASTER_ROOT"]
    assert not root.startswith("/"), "an absolute path depends on the builder's layout (pack: /workspace/fn, host: /func)"
    from forecast import settings as forecast_settings

    monkeypatch.chdir(tmp_path)  # the working directory is not the function's
    resolved = forecast_settings.ForecastSettings.from_env({"FORECASTER_ROOT": root}).forecaster_root
    assert resolved == str(ROOT / "functions" / "forecast" / "forecast" / root)
    assert forecast_settings.package_relative("/abs/forecaster") == "/abs/forecaster"
    # the host builder installs the wheel: the git-ignored artifact must be in it
    copy = tmp_path / "forecast-fn"
    shutil.copytree(ROOT / "functions" / "forecast", copy, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    (copy / ".gitignore").write_text((ROOT / ".gitignore").read_text())
    (copy / "forecast" / "models" / "forecaster").mkdir(parents=True)
    (copy / "forecast" / "models" / "forecaster" / "manifest.json").write_text("{}")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(copy)], check=True)
    (wheel,) = (tmp_path / "dist").glob("function-*.whl")
    assert f"forecast/{root}/manifest.json" in zipfile.ZipFile(wheel).namelist()


def test_the_infer_functions_models_are_found_under_the_package_wherever_the_builder_put_it(tmp_path, monkeypatch):
    (func,) = load_documents(ROOT / "functions" / "infer" / "func.yaml")
    envs = {e["name"]: e["value"] for e in func["run"]["envs"]}
    assert not envs.get("MODEL_ROOT", "").startswith("/"), "an absolute path depends on the builder's layout"
    from infer import settings as infer_settings

    monkeypatch.chdir(tmp_path)  # the working directory is not the function's: `models` there is not the root
    (tmp_path / "models").mkdir()
    resolved = infer_settings.InferSettings.from_env({"MODEL_PATH": envs["MODEL_PATH"]}).model_root
    assert resolved == ROOT / "functions" / "infer" / "infer" / "models"
    assert infer_settings.InferSettings.from_env({"MODEL_PATH": "w.onnx", "MODEL_ROOT": str(tmp_path)}).model_root \
        == tmp_path
    # the host builder installs the wheel: the git-ignored models must be in it
    copy = tmp_path / "infer-fn"
    shutil.copytree(ROOT / "functions" / "infer", copy, ignore=shutil.ignore_patterns("build", "*.egg-info", "models"))
    (copy / ".gitignore").write_text((ROOT / ".gitignore").read_text())
    (copy / "infer" / "models").mkdir()
    (copy / "infer" / "models" / "manifest.json").write_text("{}")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(copy)], check=True)
    (wheel,) = (tmp_path / "dist").glob("function-*.whl")
    assert "infer/models/manifest.json" in zipfile.ZipFile(wheel).namelist()


# -- eventing/ and serving/ apply on a stock install ------------------------------------------------

def test_eventing_applies_without_oidc_and_the_eventpolicy_is_an_overlay():
    kinds = {d["kind"] for d in _kustomize(ROOT / "eventing")}
    assert "EventPolicy" not in kinds and {"Broker", "Trigger", "PingSource"} <= kinds
    assert {d["kind"] for d in _kustomize(ROOT / "eventing" / "oidc")} == {"EventPolicy"}


def test_serving_applies_without_a_monitoring_namespace():
    """Every namespaced object of serving/ lands in a namespace serving/ creates or Knative's own."""
    documents = _kustomize(ROOT / "serving")
    created = {d["metadata"]["name"] for d in documents if d["kind"] == "Namespace"}
    used = {d["metadata"]["namespace"] for d in documents if d["metadata"].get("namespace")}
    assert used <= created | {"knative-serving"}, used - created
    text = "\n".join(yaml.safe_dump(d) for d in documents)
    assert "monitoring" not in text  # no NetworkPolicy by namespace name either: a label selects scrapers
    (policy,) = [d for d in documents if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "functions-from-knative-only"]
    assert {"predictive-scaling.io/scraper": "true"} in [
        f.get("namespaceSelector", {}).get("matchLabels") for f in policy["spec"]["ingress"][0]["from"]]


def test_every_kustomization_builds_and_every_overlay_object_is_valid():
    for kustomization in sorted(p for d in ("serving", "eventing") for p in (ROOT / d).rglob("kustomization.yaml")):
        for document in _kustomize(kustomization.parent):
            validate_resource(document)


# -- scrape selectors match the pods Knative and func create ----------------------------------------

def _pods() -> list[dict]:
    services = [d for p in [*(ROOT / "serving").glob("infer-*.yaml"), ROOT / "serving" / "pool" / "infer-pool.yaml"]
                for d in load_documents(p)]
    rendered = [render_service(ROOT / "functions" / n / "func.yaml") for n in FUNCTIONS]
    rendered[-1]["metadata"]["namespace"] = "models"  # func deploy --namespace models
    rendered[-1]["metadata"]["name"] = "infer-func"
    pods = []
    for index, service in enumerate(services + rendered):
        revision = f"{service['metadata']['name']}-00001"
        pods.append({"namespace": service["metadata"]["namespace"], "name": f"{revision}-deployment-abc",
                     "ip": f"10.0.0.{index + 1}", "labels": knative_rules.pod_labels(service, revision),
                     "containers": knative_rules.pod_containers(service)})
    return pods


def _scrape_jobs() -> dict[str, dict]:
    (config_map,) = load_documents(ROOT / "serving" / "prometheus" / "prometheus-config.yaml")
    return {job["job_name"]: job for job in yaml.safe_load(config_map["data"]["prometheus.yml"])["scrape_configs"]}


def test_scrape_jobs_keep_the_pods_that_knative_and_func_create():
    pods = _pods()
    jobs = _scrape_jobs()
    infer = kept(jobs["infer"], pods)
    assert sorted(t["service"] for t in infer) == ["infer-diabetes", "infer-func", "infer-pool", "infer-wine"]
    assert all(t["__address__"].endswith(":8080") for t in infer)
    functions = kept(jobs["predictive-scaling-functions"], pods)
    assert sorted(t["function"] for t in functions) == ["forecast", "scale"]
    assert all(t["__address__"].endswith(":9464") for t in functions)
    queue = kept(jobs["queue-proxy"], pods)
    assert sorted(t["service"] for t in queue) == sorted(
        ["infer-diabetes", "infer-func", "infer-pool", "infer-wine", "forecast", "scale", "deadletter"])
    assert all(t["__address__"].endswith(":9091") for t in queue)


def test_podmonitors_select_the_same_pods_and_keep_the_jobs_the_presets_read():
    pods = _pods()
    monitors = {m["metadata"]["name"]: m for m in load_documents(ROOT / "serving" / "prometheus-operator" / "podmonitors.yaml")}
    by_name = {p["name"]: p for p in pods}

    def services(monitor):
        return sorted(by_name[pod]["labels"]["serving.knative.dev/service"] for pod, _ in podmonitor_targets(monitors[monitor], pods))

    assert services("infer") == ["infer-diabetes", "infer-func", "infer-pool", "infer-wine"]
    assert services("predictive-scaling-functions") == ["forecast", "scale"]
    assert len(services("queue-proxy")) == 7
    from forecast.metric_presets import PRESETS

    jobs = {re.search(r'job="([^"]+)"', h)[1] for p in PRESETS.values() for h in p.heartbeat.split(";") if "job=" in h}
    set_jobs = {r["replacement"] for m in monitors.values() for e in m["spec"]["podMetricsEndpoints"]
                for r in e.get("relabelings", []) if r.get("targetLabel") == "job"}
    assert {"queue-proxy", "infer"} <= set_jobs and {"queue-proxy", "infer"} <= jobs
    (rule,) = load_documents(ROOT / "serving" / "prometheus-operator" / "prometheusrule.yaml")
    (config_map,) = load_documents(ROOT / "serving" / "prometheus" / "prometheus-config.yaml")
    assert rule["spec"] == yaml.safe_load(config_map["data"]["rules.yml"])


# -- the pool's repository, its feature flag and the apply order -------------------------------------

def test_the_pool_repository_needs_no_persistent_volume_and_is_filled_in_the_pod():
    everything = [d for d in (*_kustomize(ROOT / "serving"), *_kustomize(ROOT / "serving" / "pool"))]
    assert not [d for d in everything if d["kind"] == "PersistentVolumeClaim"]
    (pool,) = [d for d in everything if d["kind"] == "Service" and d["metadata"]["name"] == "infer-pool"]
    spec = pool["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert not [v for v in volumes.values() if "persistentVolumeClaim" in v]
    (server,) = spec["containers"]
    env = {e["name"]: e.get("value") for e in server["env"]}
    (repository,) = [m for m in server["volumeMounts"] if m["mountPath"] == env["MODEL_REPOSITORY"]]
    assert repository["readOnly"] is True and "emptyDir" in volumes[repository["name"]]
    (init,) = spec["initContainers"]
    (target,) = [m for m in init["volumeMounts"] if m["name"] == repository["name"]]
    assert init["command"][-1].rstrip("/") == target["mountPath"]  # it copies into that volume
    containerfile = (ROOT / "serving" / "pool" / "models.Containerfile").read_text()
    assert init["image"].rsplit(":", 1)[0] in containerfile and "COPY . /models/" in containerfile
    assert init["command"][-2] == "/models/."
    # stock Knative refuses the init container; the features overlay turns on exactly what it needs
    assert knative_rules.features_missing(pool, {}) == ["kubernetes.podspec-init-containers"]
    (features,) = _kustomize(ROOT / "serving" / "pool" / "features")
    assert knative_rules.features_missing(pool, features["data"]) == []


def test_the_webhook_refuses_the_pool_until_its_flag_is_on_and_accepts_every_other_service_as_is():
    (pool,) = load_documents(ROOT / "serving" / "pool" / "infer-pool.yaml")
    (features,) = load_documents(ROOT / "serving" / "pool" / "features" / "config-features.yaml")
    stock, flagged = KubeApiDouble(), KubeApiDouble(config_features=features["data"])
    try:
        url = "/apis/serving.knative.dev/v1/namespaces/models/services"
        refused = requests.post(stock.url + url, json=pool, timeout=5)
        assert refused.status_code == 400 and "kubernetes.podspec-init-containers" in refused.json()["message"]
        assert requests.post(flagged.url + url, json=pool, timeout=5).status_code == 201
        others = [d for p in (ROOT / "serving").glob("infer-*.yaml") for d in load_documents(p)]
        others += [render_service(ROOT / "functions" / n / "func.yaml") for n in FUNCTIONS]
        for index, service in enumerate(others):  # serving/ and func deploy need no flag beyond Knative's defaults
            service["metadata"].update(namespace="models", name=f"{service['metadata']['name']}-{index}")
            reply = requests.post(stock.url + url, json=service, timeout=5)
            assert reply.status_code == 201, reply.text
    finally:
        stock.close()
        flagged.close()
    bad = json.loads(json.dumps(pool))
    bad["spec"]["template"]["spec"]["volumes"].append({"name": "cfg", "configMap": {"name": "x"}})
    bad["spec"]["template"]["spec"]["containers"][0]["volumeMounts"].append({"name": "cfg", "mountPath": "/cfg"})
    assert "readOnly" in knative_rules.pod_spec_denial(bad, features["data"])


def test_feature_flags_are_applied_before_the_services_that_need_them():
    """The webhook reads config-features from an informer: in one apply the Service can meet the
    old flags. No kustomization carries both, and the install page applies the flags first."""
    for kustomization in sorted(p for d in ("serving", "eventing") for p in (ROOT / d).rglob("kustomization.yaml")):
        documents = _kustomize(kustomization.parent)
        if any(d["kind"] == "ConfigMap" and d["metadata"]["name"] == "config-features" for d in documents):
            assert not [d for d in documents if d["kind"] == "Service" and knative_rules.features_needed(d)], kustomization
    section = INSTALL
    features, pool = section.index("kubectl apply -k serving/pool/features/"), section.index("kubectl apply -k serving/pool/\n")
    assert features < pool


# -- DomainMappings: claimed, or not Ready ----------------------------------------------------------

def test_every_mapped_host_has_its_claim_in_the_admin_overlay():
    mappings = load_documents(ROOT / "serving" / "pool" / "domainmappings.yaml")
    claims = {c["metadata"]["name"]: c["spec"]["namespace"] for c in _kustomize(ROOT / "serving" / "pool" / "domain-claims")}
    assert claims == {m["metadata"]["name"]: m["metadata"]["namespace"] for m in mappings}
    assert "ClusterDomainClaim" not in {d["kind"] for d in _kustomize(ROOT / "serving" / "pool")}  # the admin's, apart


def test_a_domain_mapping_is_ready_only_with_its_claim():
    def status(double, host):
        conditions = double.get("serving.knative.dev", "domainmappings", "models", host)["status"]["conditions"]
        return {c["type"]: c["status"] for c in conditions}

    double = KubeApiDouble()
    try:
        double.add_service("models", "infer-pool")
        double.add_domain_mapping("models", "wine.models.example.com", "infer-pool", claimed=False)
        assert status(double, "wine.models.example.com") == {"Ready": "False", "DomainClaimed": "False"}
        assert double.mapping_target("models", "wine.models.example.com") is None
        double.add_cluster_domain_claim("other.models.example.com", "elsewhere")
        double.add_domain_mapping("models", "other.models.example.com", "infer-pool", claimed=False)
        assert status(double, "other.models.example.com")["Ready"] == "False"  # claimed for another namespace
        double.add_domain_mapping("models", "diabetes.models.example.com", "infer-pool")
        assert status(double, "diabetes.models.example.com") == {"Ready": "True", "DomainClaimed": "True"}
    finally:
        double.close()
    auto = KubeApiDouble(autocreate_domain_claims=True)
    try:
        auto.add_service("models", "infer-pool")
        auto.add_domain_mapping("models", "wine.models.example.com", "infer-pool", claimed=False)
        assert status(auto, "wine.models.example.com")["Ready"] == "True"
        assert auto.get("networking.internal.knative.dev", "clusterdomainclaims", None,
                        "wine.models.example.com")["spec"]["namespace"] == "models"
    finally:
        auto.close()


# -- gunicorn under a read-only root file system ----------------------------------------------------

def test_gunicorn_gets_a_writable_worker_tmp_dir_under_a_read_only_root(monkeypatch):
    from infer.serve import parse_args

    services = [d for p in [*(ROOT / "serving").glob("infer-*.yaml"), ROOT / "serving" / "pool" / "infer-pool.yaml"]
                for d in load_documents(p)]
    for service in services:
        spec = service["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        env = {e["name"]: e.get("value") for e in container["env"]}
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        mount = mounts[env["WORKER_TMP_DIR"]]
        assert not mount.get("readOnly")
        (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
        assert "emptyDir" in volume
    monkeypatch.setenv("WORKER_TMP_DIR", "/tmp/heartbeat")
    assert parse_args([]).worker_tmp_dir == "/tmp/heartbeat"  # what gunicorn's worker_tmp_dir is set to


def test_the_real_server_puts_its_worker_heartbeat_where_worker_tmp_dir_says(models_dir, infer_server_factory, tmp_path):
    """gunicorn itself: with WORKER_TMP_DIR on a directory that is not there, no worker can boot
    (so the setting reaches gunicorn); on a writable one (the pod's emptyDir) it serves."""
    import os

    from localmode.processes import free_port
    from training.publish_model import pinned_env

    model = models_dir / "wine.onnx"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "functions" / "infer"), **pinned_env(model),
           "WORKER_TMP_DIR": str(tmp_path / "not-there")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    failed = subprocess.run([sys.executable, "-m", "infer.serve", "--model", str(model), "--port", str(free_port()),
                             "--workers", "1"], env=env, capture_output=True, text=True, timeout=60)
    assert failed.returncode != 0 and "workertmp" in failed.stdout + failed.stderr
    (tmp_path / "writable").mkdir()
    server = infer_server_factory(model, env={"WORKER_TMP_DIR": str(tmp_path / "writable")}, workers=1)
    assert requests.get(server.url + "/v2/health/ready", timeout=5).status_code == 200


# -- the install page ---------------------------------------------------------------------------------

def test_readme_install_commands_work_as_written():
    section = _install_section()
    # redis-cli needs the password the Deployment requires
    for line in (line for line in ALL_DOCS.splitlines() if "redis-cli" in line and "kubectl exec" in line):
        assert "REDIS_PASSWORD" in line or "-a " in line, line
    # every Knative feature flag named anywhere is one Knative knows (a misspelt one is ignored)
    named = set(re.findall(r"kubernetes\.(?:podspec|containerspec)-[a-z-]+[a-z]", ALL_DOCS))
    for path in (ROOT / "serving").rglob("*.yaml"):
        named |= set(re.findall(r"kubernetes\.(?:podspec|containerspec)-[a-z-]+[a-z]", path.read_text()))
    assert named and named <= knative_rules.FEATURE_FLAGS, named - knative_rules.FEATURE_FLAGS
    # the securityContext hardening adds fields to what func set, never replaces the object
    patches = re.findall(r'"path":\s*"([^"]*securityContext[^"]*)"', section)
    assert patches and all(not p.endswith("/securityContext") for p in patches), patches
    # the optional parts are their own steps; the Operator spelling is named
    for step in ("kubectl apply -k eventing/oidc/", "kubectl apply -k serving/pool/domain-claims/",
                 "serving/operator/", "KnativeServing", "serving/prometheus", "make verify-cluster"):
        assert step in section, step
    assert "/workspace/models/forecaster" not in ALL_DOCS
    assert "not been run on a real cluster" in section


def test_every_manifest_path_the_docs_and_comments_name_exists():
    """Files moved into the optional overlays: no doc or comment may point at the old place."""
    texts = dict(DOCS)
    texts.update({str(p.relative_to(ROOT)): p.read_text() for d in ("functions", "serving", "eventing")
                  for p in (ROOT / d).rglob("*") if p.suffix in (".py", ".yaml") and ".venv" not in p.parts})
    missing, found = set(), 0
    for name, text in texts.items():
        for match in re.finditer(r"(?<![\w/.-])((?:serving|eventing)/[\w./-]*[\w/])(?![\w*-])", text):
            found += 1
            if not (ROOT / match[1]).exists():
                missing.add(f"{name}: {match[1]}")
    assert found > 40 and not missing, (found, sorted(missing))
