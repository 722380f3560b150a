"""PromQL presets: per-minute request counts per Knative Service, for each metrics source.

Every query yields one series per (namespace, service) whose value at step t is the number of
requests in the minute ending at t (`increase` over `{window}` = 1m; Prometheus needs two
samples in the window, so scrape at 30 s or faster). `{selector}` receives extra label matchers
(SERVICE_SELECTOR, and the services being back-filled) inside a metric's braces, after any
matchers the preset has of its own.

A counter's first sample is not a change: `increase` reads 0 for a series that appears already
at 1 (a pod started from zero by the request it then counts, the first scrape after that
request). Those are the requests a scale-to-zero service lives on, so every preset counts a
series that did not exist a moment ago (no sample in the `{lookback}` before the minute) by its
value, which is what it counted since it was born (`counted`). The price: a pod whose scrapes
fail for longer than the look-back has its whole count read once when they resume, an
over-count, which can only scale up.

Knative's queue-proxy request metrics are off by default (`request-metrics-protocol: none` in
config-observability); serving/config-observability.yaml turns them on.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricQuery:
    name: str
    promql: str
    service_label: str
    namespace_label: str
    selector: str = ""
    heartbeat: str = ""
    """Label matchers of the scrape job(s) the query reads, `;` between jobs that are all
    needed: a minute counts as observed only if Prometheus scraped a target of each of them
    successfully (`up == 1`) twice in it."""

    def heartbeat_promql(self, window: str = "1m") -> str:
        """1 at each step where a target of every job the preset reads answered two scrapes in the
        window. `up` is 1 for a successful scrape and 0 for a failed one, so its sum over the
        window counts successes: a broken scrape job or every target down leaves no heartbeat,
        which reads as a gap (never as idle)."""
        jobs = [h.strip() for h in self.heartbeat.split(";") if h.strip()] or [""]
        return " and ".join(f"count(sum_over_time({f'up{{{h}}}' if h else 'up'}[{window}]) >= 2)" for h in jobs)

    def render(self, extra: str = "", window: str = "1m", lookback: str = "10m") -> str:
        matchers = ",".join(m for m in (self.selector, extra) if m)
        at = self.promql.find("{selector}")
        if matchers and at > 0 and self.promql[at - 1] != "{":
            matchers = "," + matchers
        return (self.promql.replace("{window}", window).replace("{lookback}", lookback)
                .replace("{selector}", matchers))


def counted(series: str) -> str:
    """Requests in the minute ending at each step for the counter selector `series`: its increase,
    or, for a series born within the minute, its whole value (see the module docstring)."""
    return f"(({series} unless last_over_time({series}[{{lookback}}] offset {{window}})) or increase({series}[{{window}}]))"


# The queue-proxy job of serving/prometheus/prometheus-config.yaml scrapes every Knative pod, including the
# control-plane functions themselves (min-scale 1): it has live targets even when every model
# Service is at zero, so "no series while the job is scraped" can honestly read as idle.
_QUEUE_PROXY = 'job="queue-proxy"'

PRESETS: dict[str, MetricQuery] = {
    # Knative <= 1.18 (OpenCensus): revision_app_request_count, labels on the series itself.
    "knative-1.18": MetricQuery(
        "knative-1.18",
        "sum by (namespace_name, service_name) (" + counted("revision_app_request_count{{selector}}") + ")",
        service_label="service_name", namespace_label="namespace_name", heartbeat=_QUEUE_PROXY),
    # Knative 1.19-1.20 (OpenTelemetry): app duration histogram's count, labels on the series.
    "knative-1.19": MetricQuery(
        "knative-1.19",
        "sum by (k8s_namespace_name, kn_service_name) (" + counted("kn_queueproxy_app_duration_seconds_count{{selector}}") + ")",
        service_label="kn_service_name", namespace_label="k8s_namespace_name", heartbeat=_QUEUE_PROXY),
    # Knative >= 1.21: the service, revision and namespace live on target_info, joined on(job, instance).
    "knative-1.21": MetricQuery(
        "knative-1.21",
        "sum by (k8s_namespace_name, kn_service_name) ("
        + counted("kn_serving_invocation_duration_seconds_count") +
        " * on (job, instance) group_left (k8s_namespace_name, kn_service_name) target_info{{selector}})",
        service_label="kn_service_name", namespace_label="k8s_namespace_name", heartbeat=_QUEUE_PROXY),
    # Istio ingress gateway: also counts the requests the activator buffers while at zero. Its
    # destination_service_name is a Revision's Kubernetes Service (`<revision>` or
    # `<revision>-private`, whatever the Revision is named), so it is mapped to the Knative Service
    # by that Kubernetes Service's own `serving.knative.dev/service` label, read from
    # kube-state-metrics' kube_service_labels (run it with
    # `--metric-labels-allowlist=services=[serving.knative.dev/service]`).
    "istio": MetricQuery(
        "istio",
        "sum by (destination_service_namespace, label_serving_knative_dev_service) ("
        + counted('istio_requests_total{reporter="source",source_workload="istio-ingressgateway"}') +
        " * on (destination_service_namespace, destination_service_name) group_left (label_serving_knative_dev_service)"
        " label_replace(label_replace(max by (namespace, service, label_serving_knative_dev_service) ("
        'kube_service_labels{label_serving_knative_dev_service!=""{selector}}),'
        ' "destination_service_namespace", "$1", "namespace", "(.+)"),'
        ' "destination_service_name", "$1", "service", "(.+)"))',
        service_label="label_serving_knative_dev_service", namespace_label="destination_service_namespace",
        heartbeat='job="istio-ingressgateway"; job="kube-state-metrics"'),
    # The infer function's own counter; serving/prometheus/prometheus-config.yaml relabels the pod's
    # serving.knative.dev/service label to `service` and its namespace to `namespace`.
    "infer": MetricQuery(
        "infer",
        "sum by (namespace, service) (" + counted("infer_requests_total{{selector}}") + ")",
        service_label="service", namespace_label="namespace", heartbeat='job="infer"'),
}
