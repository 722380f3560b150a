"""Per-minute request counts for every managed service, from Prometheus, one range query a call.

The preset's query is joined (`or`) with a heartbeat series, `count(count_over_time(up[1m]) >= 2)`,
labelled `__scraped__`: it exists at a step iff Prometheus scraped some target at least twice in
that minute (what `increase` needs to count it). That
is what tells idle from unknown. A service with no series in a scraped minute had no pods
answering (scale-to-zero) and so no requests: 0. A minute without the heartbeat (Prometheus down,
or a hole in its storage) is a gap for every service: NaN, never read as idle.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from .metric_presets import MetricQuery

HEARTBEAT = "__scraped__"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_REVISION_SUFFIX = re.compile(r"(-\d{5})?(-private)?$")


class PrometheusUnavailable(RuntimeError):
    """Prometheus could not answer: unreachable, timed out, or returned an error."""


@dataclass
class Reading:
    start_minute: int
    """Epoch minute of column 0."""
    counts: dict[str, np.ndarray]
    """namespace/service -> requests per minute over [start_minute, start_minute + n)."""
    scraped: np.ndarray
    """Bool per minute: Prometheus scraped in that minute (else every service has a gap)."""

    def series_for(self, service: str) -> np.ndarray:
        """The service's counts with the no-series-while-scraped minutes read as 0."""
        values = self.counts.get(service)
        if values is None:
            values = np.full(len(self.scraped), np.nan)
        return np.where(self.scraped, np.nan_to_num(values, nan=0.0), np.nan)


class PrometheusSource:
    def __init__(self, url: str, query: MetricQuery, timeout_s: float, minute_s: int = 60):
        self.query = query
        self.minute_s = minute_s
        self.timeout_s = timeout_s
        # POST: a back-fill selector naming many services would overflow a GET URL.
        self._client = PrometheusConnect(url=url, disable_ssl=True, timeout=timeout_s, method="POST",
                                         retry=Retry(total=1, backoff_factor=0.2, status_forcelist=(502, 503, 504)))
        self.queries_sent = 0

    def read(self, start_minute: int, end_minute: int, services: list[str] | None = None) -> Reading:
        """Counts for the minutes [start_minute, end_minute); `services` restricts the query."""
        n = end_minute - start_minute
        window = f"{self.minute_s}s"
        promql = f"({self.query.render(self._selector(services), window)}) or label_replace(" \
                 f"count(count_over_time(up[{window}]) >= 2), \"{self.query.service_label}\", \"{HEARTBEAT}\", \"\", \"\")"
        # The value at step t counts the minute ending at t: minute m is read at (m + 1) * 60.
        first = datetime.fromtimestamp((start_minute + 1) * self.minute_s, timezone.utc)
        last = datetime.fromtimestamp(end_minute * self.minute_s, timezone.utc)
        self.queries_sent += 1
        try:
            result = self._client.custom_query_range(promql, start_time=first, end_time=last, step=str(self.minute_s))
        except (requests.RequestException, PrometheusApiClientException, ValueError) as exc:
            raise PrometheusUnavailable(f"{type(exc).__name__}: {str(exc)[:300]}") from exc
        counts: dict[str, np.ndarray] = {}
        scraped = np.zeros(n, dtype=bool)
        for series in result:
            labels = series.get("metric", {})
            name = labels.get(self.query.service_label, "")
            stamps = np.array([float(t) for t, _ in series["values"]])
            values = np.array([float(v) for _, v in series["values"]])
            index = np.round(stamps / self.minute_s).astype(np.int64) - 1 - start_minute
            inside = (index >= 0) & (index < n)
            if name == HEARTBEAT:
                scraped[index[inside]] = True
                continue
            if self.query.revision_suffix:
                name = _REVISION_SUFFIX.sub("", name)
            key = f"{labels.get(self.query.namespace_label, '')}/{name}"
            row = counts.setdefault(key, np.full(n, np.nan))
            row[index[inside]] = np.nan_to_num(row[index[inside]], nan=0.0) + values[inside]
        return Reading(start_minute, counts, scraped)

    def _selector(self, services: list[str] | None) -> str:
        if not services:
            return ""
        # Knative Service names are DNS labels: nothing in them needs escaping in a regex.
        names = sorted({s.split("/", 1)[1] for s in services if _DNS_LABEL.match(s.split("/", 1)[1])})
        alternatives = "|".join(names)
        if self.query.revision_suffix:
            alternatives = f"({alternatives})(-[0-9]+)?(-private)?"
        return f'{self.query.service_label}=~"{alternatives}"'
