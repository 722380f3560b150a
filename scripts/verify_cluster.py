"""Checks a real install end to end and says what is wrong in words (`make verify-cluster`).

    python scripts/verify_cluster.py [--context NAME] [--redis-url redis://:PASSWORD@127.0.0.1:6379/0]
        [--prometheus-url http://127.0.0.1:9090] [--ingress-url http://INGRESS_IP] [--pool] [--oidc]

With your kubeconfig (the `kubernetes` client, read-only calls), it checks, in the order a
problem would block the next step:
 1. the CRDs and the API versions this project uses, and the Knative Serving version;
 2. the feature flags the chosen options need (request metrics for the knative-* presets, a real
    domain, the pool's init containers and its ClusterDomainClaims, OIDC for the EventPolicy);
 3. the functions, the Broker, the Triggers and the PingSource Ready;
 4. a ping producing a forecast and a decision (their latest records in Redis, --redis-url: e.g.
    through `kubectl -n predictive-scaling port-forward deploy/redis 6379`);
 5. a model answering through its host at the ingress (--ingress-url, with the Host header);
 6. the pool's DomainMappings Ready (--pool);
 7. Prometheus returning the preset's series for the managed Services (--prometheus-url).
A check whose input is not given is reported as not checked. Exit 0 when nothing failed.

Tested against the project's Kubernetes API double and local Redis, Prometheus and infer
processes (tests/test_verify_cluster.py); the project has not run it on a real cluster.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "functions" / "forecast"))

from forecast.metric_presets import PRESETS  # noqa: E402  (the forecast function's own queries)

CONTROL = ("forecast", "scale", "deadletter")
# CRD name -> (API version used, what installs it, needed only with this option)
CRDS = {
    "services.serving.knative.dev": ("v1", "Knative Serving", None),
    "revisions.serving.knative.dev": ("v1", "Knative Serving", None),
    "domainmappings.serving.knative.dev": ("v1beta1", "Knative Serving", "pool"),
    "brokers.eventing.knative.dev": ("v1", "Knative Eventing", None),
    "triggers.eventing.knative.dev": ("v1", "Knative Eventing", None),
    "pingsources.sources.knative.dev": ("v1", "Knative Eventing", None),
    "eventpolicies.eventing.knative.dev": ("v1alpha1", "Knative Eventing >= 1.15", "oidc"),
}


@dataclass
class Check:
    name: str
    status: str  # ok | fail | not checked
    detail: str


class Api:
    """Read-only GETs through the official client (its kubeconfig, auth and TLS), as plain JSON."""

    def __init__(self, api_url: str | None, context: str | None):
        from kubernetes import client, config

        if api_url:
            configuration = client.Configuration(host=api_url)
        else:
            configuration = client.Configuration()
            config.load_kube_config(context=context, client_configuration=configuration)
        self.client = client.ApiClient(configuration)

    def get(self, path: str, **query: str) -> dict | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.client.call_api(path, "GET", query_params=list(query.items()), auth_settings=["BearerToken"],
                                        response_type="object", _return_http_data_only=True)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise


def _condition(obj: dict | None, kind: str = "Ready") -> tuple[str, str]:
    for condition in ((obj or {}).get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return condition.get("status", "Unknown"), condition.get("message") or condition.get("reason") or ""
    return "Unknown", "no status yet"


def _version(label: str) -> tuple[int, int] | None:
    parts = [int(p) for p in label.lstrip("v").split(".")[:2] if p.isdigit()]
    return (parts[0], parts[1]) if len(parts) == 2 else None


def check_platform(api: Api, args) -> list[Check]:
    checks = []
    for name, (version, source, option) in CRDS.items():
        if option and not getattr(args, option):
            continue
        crd = api.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
        served = [v["name"] for v in ((crd or {}).get("spec") or {}).get("versions", []) if v.get("served")]
        if crd is None:
            checks.append(Check(f"CRD {name}", "fail", f"missing: is {source} installed?"))
        elif version not in served:
            checks.append(Check(f"CRD {name}", "fail", f"does not serve {version} (serves {', '.join(served)}): "
                                                         f"{source} is too old for this project"))
        else:
            checks.append(Check(f"CRD {name}", "ok", f"serves {version}"))
    namespace = api.get("/api/v1/namespaces/knative-serving") or {}
    label = ((namespace.get("metadata") or {}).get("labels") or {}).get("app.kubernetes.io/version", "")
    where = "knative-serving namespace"
    if _version(label) is None:
        controller = api.get("/apis/apps/v1/namespaces/knative-serving/deployments/controller") or {}
        label = ((controller.get("metadata") or {}).get("labels") or {}).get("app.kubernetes.io/version", "")
        where = "controller Deployment"
    found = _version(label)
    if found is None:
        checks.append(Check("Knative Serving version", "fail",
                            "no version label on the knative-serving namespace or its controller Deployment: "
                            "set KNATIVE_VERSION in functions/scale/func.yaml instead of auto"))
    elif found < (1, 21):
        checks.append(Check("Knative Serving version", "ok",
                            f"{found[0]}.{found[1]} ({where}): below 1.21, so apply serving/knative-1.20/ (the scale "
                            "function patches PodAutoscalers) and pick the matching METRICS_PRESET"))
    else:
        checks.append(Check("Knative Serving version", "ok", f"{found[0]}.{found[1]} ({where})"))
    return checks


def _data(api: Api, namespace: str, name: str) -> dict[str, str] | None:
    found = api.get(f"/api/v1/namespaces/{namespace}/configmaps/{name}")
    return None if found is None else (found.get("data") or {})


def check_flags(api: Api, args) -> list[Check]:
    checks = []
    if args.preset.startswith("knative"):
        observability = _data(api, "knative-serving", "config-observability") or {}
        if observability.get("request-metrics-protocol", "none") == "none":
            checks.append(Check("request metrics", "fail", "config-observability has request-metrics-protocol "
                                "none (the default): the queue-proxy exports no request counts, so every service "
                                "reads as no-data. Apply serving/config-observability.yaml (Operator installs: "
                                "serving/operator/)"))
        else:
            checks.append(Check("request metrics", "ok", f"request-metrics-protocol: {observability['request-metrics-protocol']}"))
    domains = [k for k in (_data(api, "knative-serving", "config-domain") or {}) if not k.startswith("_")]
    if not domains or domains == ["svc.cluster.local"]:
        checks.append(Check("domain", "fail", "config-domain sets no domain: Services get svc.cluster.local hosts, "
                            "which the Istio ingress does not serve. Apply serving/config-domain.yaml"))
    else:
        checks.append(Check("domain", "ok", ", ".join(domains)))
    if args.pool:
        checks.append(_feature(api, "init containers", "knative-serving", "kubernetes.podspec-init-containers",
                               "config-features leaves kubernetes.podspec-init-containers disabled: the pool "
                               "Service is refused. Apply serving/pool/features/ first"))
    if args.oidc:
        checks.append(_feature(api, "OIDC", "knative-eventing", "authentication-oidc",
                               "knative-eventing config-features leaves authentication-oidc off: the EventPolicy "
                               "(eventing/oidc/) is refused; turn it on or skip that overlay"))
    return checks


def _feature(api, name: str, namespace: str, flag: str, when_off: str) -> Check:
    """A feature flag an option needs, from that namespace's config-features."""
    features = _data(api, namespace, "config-features") or {}
    return Check(name, "ok", f"{flag} enabled") if features.get(flag) == "enabled" else Check(name, "fail", when_off)


def check_ready(api: Api, args) -> list[Check]:
    checks = []
    ns = args.namespace
    objects = [(f"function {n}", f"/apis/serving.knative.dev/v1/namespaces/{ns}/services/{n}",
                f"deploy it: (cd functions/{n} && func deploy)") for n in CONTROL]
    objects += [("Broker default", f"/apis/eventing.knative.dev/v1/namespaces/{ns}/brokers/default", "kubectl apply -k eventing/"),
                ("PingSource every-minute", f"/apis/sources.knative.dev/v1/namespaces/{ns}/pingsources/every-minute",
                 "kubectl apply -k eventing/")]
    triggers = (api.get(f"/apis/eventing.knative.dev/v1/namespaces/{ns}/triggers") or {}).get("items", [])
    for trigger in triggers:
        name = trigger["metadata"]["name"]
        objects.append((f"Trigger {name}", f"/apis/eventing.knative.dev/v1/namespaces/{ns}/triggers/{name}", ""))
    if not triggers:
        checks.append(Check("Triggers", "fail", f"none in {ns}: kubectl apply -k eventing/"))
    for label, path, fix in objects:
        obj = api.get(path)
        if obj is None:
            checks.append(Check(label, "fail", f"not found: {fix}"))
            continue
        status, message = _condition(obj)
        checks.append(Check(label, "ok" if status == "True" else "fail",
                            "Ready" if status == "True" else f"not Ready ({status}): {message}"))
    return checks


def _recent(raw: dict, now: datetime, max_age_s: float) -> list[str]:
    fresh = []
    for key, line in raw.items():
        try:
            tick = datetime.fromisoformat(json.loads(line)["tick"].replace("Z", "+00:00"))
        except (ValueError, KeyError, TypeError):
            continue
        if (now - tick).total_seconds() <= max_age_s:
            fresh.append(key.decode() if isinstance(key, bytes) else key)
    return sorted(fresh)


def check_loop(args, now: datetime) -> list[Check]:
    if not args.redis_url:
        return [Check("ping -> forecast -> decision", "not checked", "give --redis-url (e.g. through "
                      "kubectl -n predictive-scaling port-forward deploy/redis 6379, with the password)")]
    import redis

    client = redis.Redis.from_url(args.redis_url, socket_timeout=5)
    max_age = args.max_age_minutes * 60
    dead = client.llen("deadletter:events")
    hint = f"; {dead} event(s) in the dead-letter list (deadletter:events)" if dead else ""
    checks = []
    forecasts = _recent(client.hgetall("forecast:latest"), now, max_age)
    if forecasts:
        checks.append(Check("forecast", "ok", f"{len(forecasts)} service(s) forecast in the last "
                                              f"{args.max_age_minutes:g} min ({', '.join(forecasts[:5])})"))
    else:
        checks.append(Check("forecast", "fail", f"no forecast in the last {args.max_age_minutes:g} min: the ping does "
                            "not reach the forecast function (PingSource, Broker, Trigger forecast-on-ping) or it "
                            f"fails (kubectl logs -l serving.knative.dev/service=forecast -c user-container){hint}"))
    decisions = _recent(client.hgetall("scale:latest"), now, max_age)
    if decisions:
        checks.append(Check("decision", "ok", f"{len(decisions)} service(s) decided in the last "
                                              f"{args.max_age_minutes:g} min ({', '.join(decisions[:5])})"))
    else:
        checks.append(Check("decision", "fail", f"no decision in the last {args.max_age_minutes:g} min: the forecast "
                            "reply does not reach the scale function (Trigger scale-on-forecast), no Service is "
                            "opted in (label predictive-scaling.io/enabled=true), or it fails "
                            f"(kubectl logs -l serving.knative.dev/service=scale -c user-container){hint}"))
    return checks


def _managed(api: Api, args) -> list[dict]:
    services = []
    for namespace in args.managed:
        found = api.get(f"/apis/serving.knative.dev/v1/namespaces/{namespace}/services",
                        labelSelector="predictive-scaling.io/enabled=true") or {}
        services += found.get("items", [])
    return services


def check_hosts(api: Api, args, services: list[dict], mappings: list[dict]) -> list[Check]:
    if not args.ingress_url:
        return [Check("a model through its host", "not checked", "give --ingress-url (the Istio ingress gateway)")]
    targets = []
    for mapping in mappings:
        model = (mapping["metadata"].get("labels") or {}).get("predictive-scaling.io/model") or mapping["metadata"]["name"].split(".")[0]
        targets.append((mapping["metadata"]["name"], f"/v2/models/{model}"))  # metadata: loads a pooled model
    for service in services:
        url = (service.get("status") or {}).get("url", "")
        if url and not service["metadata"].get("labels", {}).get("networking.knative.dev/visibility") == "cluster-local":
            targets.append((url.split("://", 1)[-1], "/v2/health/ready"))
    if not targets:
        return [Check("a model through its host", "fail", "no opted-in Service or DomainMapping in "
                      f"{', '.join(args.managed)}")]
    checks = []
    for host, path in targets[: args.max_hosts]:
        try:
            reply = requests.get(args.ingress_url.rstrip("/") + path, headers={"Host": host}, timeout=args.http_timeout)
            ok, detail = reply.status_code == 200, f"GET {path} with Host: {host} -> {reply.status_code}"
        except requests.RequestException as exc:
            ok, detail = False, f"GET {path} with Host: {host} failed: {exc.__class__.__name__}"
        if not ok:
            detail += " (a cold start can take seconds: retry; 404 from the gateway: the host is not routed)"
        checks.append(Check(f"host {host}", "ok" if ok else "fail", detail))
    return checks


def check_mappings(mappings: list[dict]) -> list[Check]:
    if not mappings:
        return [Check("pool DomainMappings", "fail", "none found: kubectl apply -k serving/pool/")]
    checks = []
    for mapping in mappings:
        name = mapping["metadata"]["name"]
        ready, message = _condition(mapping)
        claimed, _ = _condition(mapping, "DomainClaimed")
        if ready == "True":
            checks.append(Check(f"mapping {name}", "ok", f"Ready -> {mapping['spec']['ref']['name']}"))
        elif claimed == "False":
            checks.append(Check(f"mapping {name}", "fail", f"not Ready: its host is not claimed for "
                                f"{mapping['metadata']['namespace']} ({message}). Cluster admin: kubectl apply -k "
                                "serving/pool/domain-claims/, or autocreate-cluster-domain-claims: \"true\" in config-network"))
        else:
            checks.append(Check(f"mapping {name}", "fail", f"not Ready ({ready}): {message}"))
    return checks


def check_prometheus(args, services: list[dict], now: datetime) -> list[Check]:
    if not args.prometheus_url:
        return [Check("Prometheus series", "not checked", "give --prometheus-url")]
    preset = PRESETS[args.preset]
    base = args.prometheus_url.rstrip("/")
    end = now.timestamp()

    def query(promql: str) -> list[dict]:
        reply = requests.get(f"{base}/api/v1/query_range", timeout=args.http_timeout, params={
            "query": promql, "start": end - 3600, "end": end, "step": 60})
        reply.raise_for_status()
        return reply.json()["data"]["result"]

    try:
        heartbeat = query(preset.heartbeat_promql())
        series = query(preset.render())
    except (requests.RequestException, KeyError, ValueError) as exc:
        return [Check("Prometheus series", "fail", f"{base} did not answer the preset's query: {exc}")]
    checks = [Check("scrape jobs", "ok" if heartbeat else "fail",
                    f"the {preset.name} preset's jobs ({preset.heartbeat}) were scraped in the last hour" if heartbeat else
                    f"no successful scrape of {preset.heartbeat} in the last hour: apply serving/prometheus/ or "
                    "serving/prometheus-operator/ and let Prometheus select it")]
    seen = {(s["metric"].get(preset.namespace_label), s["metric"].get(preset.service_label)) for s in series}
    wanted = [(s["metadata"]["namespace"], s["metadata"]["name"]) for s in services]
    missing = [f"{ns}/{name}" for ns, name in wanted if (ns, name) not in seen]
    if not wanted:
        checks.append(Check("Prometheus series", "fail", "no managed Service to look for"))
    elif missing:
        checks.append(Check("Prometheus series", "fail", f"no {preset.name} series in the last hour for "
                            f"{', '.join(missing)}: a Service that got no request has none (send one); otherwise the "
                            "scrape does not reach its pods (labels on the template, the infer job's user-port)"))
    else:
        checks.append(Check("Prometheus series", "ok", f"{len(wanted)} managed Service(s) have {preset.name} series"))
    return checks


def run(args, now: datetime | None = None) -> list[Check]:
    now = now or datetime.now(timezone.utc)
    api = Api(args.api_url, args.context)
    checks: list[Check] = []
    steps: list[tuple[str, Callable[[], list[Check]]]] = [
        ("platform", lambda: check_platform(api, args)), ("feature flags", lambda: check_flags(api, args)),
        ("Ready", lambda: check_ready(api, args)), ("ping -> forecast -> decision", lambda: check_loop(args, now))]
    for name, step in steps:
        try:
            checks += step()
        except Exception as exc:  # a step that cannot run says so and the others still do
            checks.append(Check(name, "fail", f"could not check: {exc.__class__.__name__}: {exc}"))
    try:
        services = _managed(api, args)
        mappings = [m for ns in args.managed for m in (api.get(
            f"/apis/serving.knative.dev/v1beta1/namespaces/{ns}/domainmappings") or {}).get("items", [])] if args.pool else []
        checks += check_hosts(api, args, services, mappings)
        if args.pool:
            checks += check_mappings(mappings)
        checks += check_prometheus(args, services, now)
    except Exception as exc:
        checks.append(Check("managed Services", "fail", f"could not check: {exc}"))
    return checks


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="verify_cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("--context", help="kubeconfig context (default: the current one)")
    parser.add_argument("--api-url", help=argparse.SUPPRESS)  # a plain-HTTP API (the tests' double)
    parser.add_argument("--namespace", default="predictive-scaling")
    parser.add_argument("--managed", default="models", help="comma-separated managed namespaces (MANAGED_NAMESPACES)")
    parser.add_argument("--preset", default="knative-1.21", choices=sorted(PRESETS))
    parser.add_argument("--redis-url")
    parser.add_argument("--prometheus-url")
    parser.add_argument("--ingress-url")
    parser.add_argument("--pool", action="store_true", help="the model pool is installed (serving/pool/)")
    parser.add_argument("--oidc", action="store_true", help="the EventPolicy overlay is installed (eventing/oidc/)")
    parser.add_argument("--max-age-minutes", type=float, default=3)
    parser.add_argument("--max-hosts", type=int, default=5)
    parser.add_argument("--http-timeout", type=float, default=30)
    parser.add_argument("--format", choices=("text", "json"), default="text")
    args = parser.parse_args(argv)
    args.managed = [n.strip() for n in args.managed.split(",") if n.strip()]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    started = time.monotonic()
    checks = run(args)
    failed = [c for c in checks if c.status == "fail"]
    if args.format == "json":
        print(json.dumps([c.__dict__ for c in checks], indent=1))
    else:
        width = max(len(c.name) for c in checks)
        for check in checks:
            mark = {"ok": "ok  ", "fail": "FAIL", "not checked": "--  "}[check.status]
            detail = f"not checked: {check.detail}" if check.status == "not checked" else check.detail
            print(f"{mark} {check.name.ljust(width)}  {detail}")
        print(f"\n{len(checks) - len(failed)} of {len(checks)} checks passed or not asked for, {len(failed)} failed "
              f"({time.monotonic() - started:.1f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
