"""Back-fill Prometheus with request counters laid out as each metrics preset's source exports
them, from per-minute counts: an OpenMetrics file, then `promtool tsdb create-blocks-from
openmetrics`. Used by the tests, the forecast benchmark and the demo, so that Prometheus holds a
week of realistic history before the first tick.

Counters are sampled `per_minute` times a minute (2: the presets' `increase(...[1m])` needs two
samples a minute) and jump by each minute's count at the minute's end, so `increase` over the
minute ending at t gives that minute's count exactly. `up` is written beside them with each
target's own job and instance, as Prometheus records it (the forecast function's heartbeat);
gap minutes have no samples at all, `up` included; `down` minutes have `up` 0 and no counters
(every target failing its scrapes).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import IO, Iterable

import numpy as np

PRESET_NAMES = ("knative-1.18", "knative-1.19", "knative-1.21", "istio", "infer")


def _series(preset: str, namespace: str, name: str, index: int, revision: str | None = None) -> list[tuple[str, str]]:
    """(metric name, label string) pairs written for one service under one preset; the counter
    first. Label sets follow what each source exports (pod-level counters, scraped per pod)."""
    revision = revision or f"{name}-00001"
    pod = f"{revision}-deployment-{index:05d}"
    instance = f"10.0.{index // 250}.{index % 250}:9091"
    if preset == "knative-1.18":
        return [("revision_app_request_count",
                 f'configuration_name="{name}",container_name="queue-proxy",namespace_name="{namespace}",'
                 f'pod_name="{pod}",response_code="200",response_code_class="2xx",'
                 f'revision_name="{name}-00001",service_name="{name}",job="queue-proxy",instance="{instance}"')]
    if preset == "knative-1.19":
        return [("kn_queueproxy_app_duration_seconds_count",
                 f'k8s_namespace_name="{namespace}",kn_service_name="{name}",kn_revision_name="{name}-00001",'
                 f'k8s_pod_name="{pod}",http_response_status_code="200",job="queue-proxy",instance="{instance}"')]
    if preset == "knative-1.21":
        return [("kn_serving_invocation_duration_seconds_count",
                 f'http_response_status_code="200",job="queue-proxy",instance="{instance}"'),
                ("target_info",
                 f'job="queue-proxy",instance="{instance}",k8s_namespace_name="{namespace}",'
                 f'kn_service_name="{name}",kn_revision_name="{name}-00001",k8s_pod_name="{pod}"')]
    if preset == "istio":
        return [("istio_requests_total",
                 f'reporter="source",source_workload="istio-ingressgateway",source_workload_namespace="istio-system",'
                 f'destination_service_name="{revision}",destination_service_namespace="{namespace}",'
                 f'response_code="200",job="istio-ingressgateway",instance="10.1.0.1:15020"'),
                ("kube_service_labels",
                 f'namespace="{namespace}",service="{revision}",label_serving_knative_dev_service="{name}",'
                 f'job="kube-state-metrics",instance="10.2.0.1:8080"')]
    if preset == "infer":
        return [("infer_requests_total",
                 f'model="{name}",protocol="v2",code="200",namespace="{namespace}",service="{name}",'
                 f'pod="{pod}",job="infer",instance="{instance}"')]
    raise ValueError(f"unknown preset {preset!r}")


def write_openmetrics(out: IO[str], services: dict[str, np.ndarray], start_minute: int,
                      presets: Iterable[str] = PRESET_NAMES, per_minute: int = 2,
                      gaps: Iterable[tuple[int, int]] = (), minute_s: int = 60,
                      down: Iterable[tuple[int, int]] = (), born: dict[str, int] | None = None,
                      revisions: dict[str, str] | None = None) -> int:
    """Write every service's counters (keys `namespace/name`, values per-minute counts from
    `start_minute`) and return the number of samples. `gaps` are [first, last) minutes;
    `minute_s` < 60 lays the minutes on an accelerated clock (the local demo's). `born` gives a
    service a pod that starts at that minute, from zero, serving the minute's requests before its
    first scrape: its series (counters and target_info alike) begin at the minute's end, already
    at that minute's count (the case plain `increase` misses), and earlier minutes are idle.
    `revisions` names a service's Revision (default `<name>-00001`)."""
    lengths = {len(v) for v in services.values()}
    (n_minutes,) = lengths
    interval = minute_s / per_minute
    stamps = start_minute * minute_s + np.arange(n_minutes * per_minute + 1) * interval
    keep = np.ones(len(stamps), dtype=bool)
    for first, last in gaps:
        keep &= ~((stamps > first * minute_s) & (stamps < last * minute_s))
    failing = np.zeros(len(stamps), dtype=bool)
    for first, last in down:
        failing |= (stamps > first * minute_s) & (stamps < last * minute_s)
    scraped = keep & ~failing  # the samples the counters have
    stamp_text = np.char.mod("%.3f", stamps[scraped])
    up_stamps = np.char.mod("%.3f", stamps[keep])
    up_values = np.where(failing[keep], "0", "1")
    written = 0
    families: dict[str, list[str]] = {}
    targets: set[tuple[str, str]] = set()
    for preset in presets:
        for i, (key, counts) in enumerate(sorted(services.items())):
            namespace, name = key.split("/", 1)
            counts = np.nan_to_num(counts, nan=0.0)
            alive = scraped
            if born and key in born:
                counts = np.where(np.arange(n_minutes) >= born[key] - start_minute, counts, 0.0)
                alive = scraped & (stamps >= (born[key] + 1) * minute_s)
            cumulative = np.concatenate(([0.0], np.cumsum(counts)))
            # sample j at start + j*interval sees the minutes that ended at or before it
            value = cumulative[np.minimum(np.arange(len(stamps)) // per_minute, n_minutes)][alive]
            value_text = np.char.mod("%.0f", value)
            own_stamps = np.char.mod("%.3f", stamps[alive]) if alive is not scraped else stamp_text
            for k, (metric, labels) in enumerate(_series(preset, namespace, name, i, (revisions or {}).get(key))):
                values = value_text if k == 0 else np.full(len(value_text), "1")
                families.setdefault(metric, []).append(_lines(metric, labels, values, own_stamps))
                written += len(values)
                job, instance = (labels.split(f'{label}="')[1].split('"')[0] for label in ("job", "instance"))
                if (job, instance) not in targets:
                    targets.add((job, instance))
                    families.setdefault("up", []).append(
                        _lines("up", f'job="{job}",instance="{instance}"', up_values, up_stamps))
                    written += len(up_stamps)
    for metric, blocks in families.items():
        out.write(f"# TYPE {metric} unknown\n")
        for block in blocks:
            out.write(block)
    out.write("# EOF\n")
    return written


def _lines(metric: str, labels: str, values: np.ndarray, stamps: np.ndarray) -> str:
    prefix = f"{metric}{{{labels}}} "
    return "".join(prefix + v + " " + t + "\n" for v, t in zip(values, stamps))


def create_blocks(openmetrics: Path, data_dir: Path, promtool: str = "promtool") -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", "--max-block-duration=8760h",
                    str(openmetrics), str(data_dir)],
                   check=True, capture_output=True, text=True)
