"""Per-minute request counts for every managed service, from Prometheus, one range query a call.

The preset's query is joined (`or`) with a heartbeat series, labelled `__scraped__`: it exists at
a step iff Prometheus scraped a target of the preset's own job successfully (`up == 1`) at least
twice in that minute (what `increase` needs to count it; `MetricQuery.heartbeat_promql`). That
is what tells idle from unknown: failed scrapes (`up == 0`) do not count. A service with no series in a scraped minute had no pods
answering (scale-to-zero) and so no requests: 0. A minute without the heartbeat (Prometheus down,
or a hole in its storage) is a gap for every service: NaN, never read as idle.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Iterator

import numpy as np
import orjson
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from .metric_presets import MetricQuery
from .metrics import prometheus_call

HEARTBEAT = "__scraped__"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_BRACKETS = bytes.maketrans(b'[]"', b"   ")
# `sum by (<namespace>, <service>) (last_over_time(<metric>{<matchers>{selector}}[{window}]))`: the
# per-minute counts a recording rule wrote, summed per service (see `unsummed`).
_RECORDED = re.compile(r"\s*sum\s+by\s*\(\s*(\w+)\s*,\s*(\w+)\s*\)\s*\(\s*(last_over_time\(\s*([A-Za-z_:][\w:]*"
                       r"\s*\{[^{}]*\{selector\}[^{}]*\})\s*\[\{window\}\]\s*\))\s*\)\s*")


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
        self._api = url.rstrip("/") + "/api/v1"
        # The query goes in a form-encoded POST body, never in the URL: a back-fill selector
        # naming hundreds of services would overflow a proxy's URL limit (and it would be
        # permanent: every tick would send it again).
        self._session = requests.Session()
        retry = Retry(total=1, backoff_factor=0.2, status_forcelist=(502, 503, 504), allowed_methods=None)
        self._session.mount("http://", HTTPAdapter(max_retries=retry))
        self._session.mount("https://", HTTPAdapter(max_retries=retry))
        self.queries_sent = 0
        self.unsummed = unsummed(query)
        """The query without its `sum by`, when the sum can be done here (see `unsummed`)."""
        self.recorded = recorded(query)
        """The recorded series' selector, when its samples can be read as they are (see `recorded`)."""

    def close(self) -> None:
        self._session.close()

    def count_services(self, end_minute: int, minutes: int) -> int:
        """How many services have a series in the `minutes` before `end_minute`: one instant
        query, so a cold fill can size its chunks before the first big answer arrives."""
        promql = f"count({self.query.render('', f'{minutes * self.minute_s}s')})"
        try:
            result = self._post("query", {"query": promql, "time": f"{end_minute * self.minute_s:.3f}"})
            return int(float(result[0]["value"][1])) if result else 0
        except (requests.RequestException, KeyError, TypeError, IndexError, ValueError) as exc:
            raise PrometheusUnavailable(f"{type(exc).__name__}: {str(exc)[:300]}") from exc

    def samples_per_minute(self, end_minute: int, minutes: int, services: int) -> float:
        """Samples a read returns per service and minute (of `services`), at least 1: more only
        for a recorded series read as stored (`recorded`) whose rule runs more often than once a
        minute (every 15 s: 4), or services with several recorded series. One instant query, so
        that a cold fill's chunks hold at most `FILL_MAX_POINTS` samples whatever the rule's
        interval."""
        if self.recorded is None or services <= 0:
            return 1.0
        promql = f"sum(count_over_time({self.recorded.render('')}[{minutes * self.minute_s}s]))"
        try:
            result = self._post("query", {"query": promql, "time": f"{end_minute * self.minute_s:.3f}"})
            samples = float(result[0]["value"][1]) if result else 0.0
        except (requests.RequestException, KeyError, TypeError, IndexError, ValueError) as exc:
            raise PrometheusUnavailable(f"{type(exc).__name__}: {str(exc)[:300]}") from exc
        return max(1.0, samples / (services * minutes))

    def _query_range(self, promql: str, first: datetime, last: datetime) -> Iterator[tuple[dict, np.ndarray]]:
        """The matrix answer as (labels, [t0, v0, t1, v1, ...]) per series."""
        return self._matrix_query("query_range", {"query": promql, "start": f"{first.timestamp():.3f}",
                                                  "end": f"{last.timestamp():.3f}", "step": str(self.minute_s)})

    def _matrix_query(self, endpoint: str, form: dict[str, str], flat: bool = False):
        """A query whose answer is a matrix (a range query, or an instant query of a range
        selector), scanned series by series (`_matrix`), or all at once (`flat`: `_matrix_flat`)."""
        self.queries_sent += 1
        with prometheus_call(endpoint):
            response = self._session.post(f"{self._api}/{endpoint}", data=form, timeout=self.timeout_s,
                                          headers={"Accept-Encoding": "identity"})
            body = response.content
        if response.status_code != 200 or not body.lstrip().startswith(b'{"status":"success"'):
            try:
                error = json.loads(body)
            except ValueError:
                raise PrometheusUnavailable(f"HTTP {response.status_code}: not JSON: {body[:200]!r}") from None
            if response.status_code != 200 or error.get("status") != "success":
                raise PrometheusUnavailable(f"HTTP {response.status_code}: {error.get('errorType')}: {error.get('error')}"[:400])
        return _matrix_flat(body) if flat else _matrix(body)

    def _post(self, endpoint: str, form: dict[str, str]) -> list[dict]:
        self.queries_sent += endpoint == "query_range"
        with prometheus_call(endpoint):
            response = self._session.post(f"{self._api}/{endpoint}", data=form, timeout=self.timeout_s)
            try:
                body = response.json()
            except ValueError:
                raise PrometheusUnavailable(f"HTTP {response.status_code}: not JSON: {response.text[:200]}") from None
            if response.status_code != 200 or body.get("status") != "success":
                raise PrometheusUnavailable(f"HTTP {response.status_code}: {body.get('errorType')}: {body.get('error')}"[:400])
            return body["data"]["result"]

    def read(self, start_minute: int, end_minute: int, services: list[str] | None = None,
             zeros: bool = True) -> Reading:
        """Counts for the minutes [start_minute, end_minute); `services` restricts the query;
        `zeros=False` leaves the minutes without requests out of the answer (read as 0 where
        scraped, exactly as when they are sent)."""
        if self.recorded is not None:
            return self._read_recorded(start_minute, end_minute, services, zeros)
        n = end_minute - start_minute
        window = f"{self.minute_s}s"
        # A series the instant selector still sees (Prometheus' lookback delta, 5 min by default)
        # must be seen by the look-back too, or its whole value is counted as newly born every
        # minute: a back-filled series has no staleness marker at its end (the accelerated demo,
        # with 2 s minutes, read its history's last counter value as traffic every minute).
        lookback = f"{max(10 * self.minute_s, 300)}s"
        counted = (self.unsummed or self.query).render(self._selector(services), window, lookback)
        if not zeros:
            # the unsummed series leave their zeros out (a sum of the rest is the same sum); the
            # sums that are not > 0 are left out below, as Prometheus leaves them out here
            counted = f"({counted}) != 0" if self.unsummed else f"({counted}) > 0"
        promql = f"({counted}) or label_replace(" \
                 f"{self.query.heartbeat_promql(window)}, \"{self.query.service_label}\", \"{HEARTBEAT}\", \"\", \"\")"
        # The value at step t counts the minute ending at t: minute m is read at (m + 1) * 60.
        first = datetime.fromtimestamp((start_minute + 1) * self.minute_s, timezone.utc)
        last = datetime.fromtimestamp(end_minute * self.minute_s, timezone.utc)
        counts: dict[str, np.ndarray] = {}
        seen: dict[str, np.ndarray] = {}
        scraped = np.zeros(n, dtype=bool)
        try:
            for labels, pairs in self._query_range(promql, first, last):
                name = labels.get(self.query.service_label, "")
                index = np.round(pairs[0::2] / self.minute_s).astype(np.int64) - 1 - start_minute
                inside = (index >= 0) & (index < n)
                if name == HEARTBEAT:
                    scraped[index[inside]] = True
                    continue
                key = f"{labels.get(self.query.namespace_label, '')}/{name}"
                if key not in counts:
                    counts[key], seen[key] = np.zeros(n), np.zeros(n, dtype=bool)
                counts[key][index[inside]] += pairs[1::2][inside]  # a sum of the service's series (NaN stays NaN)
                seen[key][index[inside]] = True
        except (requests.RequestException, KeyError, TypeError, ValueError) as exc:
            raise PrometheusUnavailable(f"{type(exc).__name__}: {str(exc)[:300]}") from exc
        for key, row in counts.items():
            row[~seen[key]] = np.nan  # no series at that step: no value (0 where scraped, for the caller)
            if not zeros:
                row[~(row > 0)] = np.nan
        return Reading(start_minute, counts, scraped)

    def _read_recorded(self, start_minute: int, end_minute: int, services: list[str] | None, zeros: bool) -> Reading:
        """`read` for a recorded per-minute series (`recorded`): its samples as stored, with one
        instant query of a range selector, and the heartbeat with a range query of its own.
        Prometheus then evaluates nothing per step (the range query of `last_over_time` took
        ~12x its time for the same minutes), and the function keeps the last sample of each
        series in each minute (m*60, (m+1)*60], what `last_over_time` over the minute ending at
        (m+1)*60 reads, and sums a service's series."""
        n = end_minute - start_minute
        assert self.recorded is not None
        scraped = self._scraped(start_minute, end_minute)
        promql = f"{self.recorded.render(self._selector(services))}[{n * self.minute_s}s]"
        try:
            labels, sizes, pairs = self._matrix_query("query", {"query": promql, "time": f"{end_minute * self.minute_s:.3f}"},
                                                      flat=True)
        except (requests.RequestException, KeyError, TypeError, ValueError) as exc:
            raise PrometheusUnavailable(f"{type(exc).__name__}: {str(exc)[:300]}") from exc
        # every sample at once (no Python step per series): its service's row, its minute
        rows: dict[str, int] = {}
        row_of = np.array([rows.setdefault(f"{m.get(self.query.namespace_label, '')}/{m.get(self.query.service_label, '')}",
                                           len(rows)) for m in labels], dtype=np.int64)
        series = np.repeat(np.arange(len(labels)), sizes)
        stamps, values = pairs[0::2], pairs[1::2]
        index = np.ceil(stamps / self.minute_s).astype(np.int64) - 1 - start_minute
        last = np.ones(len(index), dtype=bool)
        # samples come in time order within a series: keep each series' last one in a minute
        last[:-1] = (index[1:] != index[:-1]) | (series[1:] != series[:-1])
        keep = last & (index >= 0) & (index < n)
        cell = row_of[series[keep]] * n + index[keep]
        # a sum of the service's series (NaN stays NaN)
        total = np.bincount(cell, weights=values[keep], minlength=len(rows) * n).reshape(len(rows), n)
        total[np.bincount(cell, minlength=len(rows) * n).reshape(len(rows), n) == 0] = np.nan
        if not zeros:
            total[~(total > 0)] = np.nan  # as `read` leaves them out (a sum that is not > 0 too)
        counts = {key: total[i] for key, i in rows.items() if zeros or not np.isnan(total[i]).all()}
        return Reading(start_minute, counts, scraped)

    def _scraped(self, start_minute: int, end_minute: int) -> np.ndarray:
        """The heartbeat alone (`MetricQuery.heartbeat_promql`): True for each minute of
        [start_minute, end_minute) Prometheus scraped in."""
        n = end_minute - start_minute
        scraped = np.zeros(n, dtype=bool)
        first = datetime.fromtimestamp((start_minute + 1) * self.minute_s, timezone.utc)
        last = datetime.fromtimestamp(end_minute * self.minute_s, timezone.utc)
        try:
            for _, pairs in self._query_range(self.query.heartbeat_promql(f"{self.minute_s}s"), first, last):
                index = np.round(pairs[0::2] / self.minute_s).astype(np.int64) - 1 - start_minute
                scraped[index[(index >= 0) & (index < n)]] = True
        except (requests.RequestException, KeyError, TypeError, ValueError) as exc:
            raise PrometheusUnavailable(f"{type(exc).__name__}: {str(exc)[:300]}") from exc
        return scraped

    def _selector(self, services: list[str] | None) -> str:
        if not services:
            return ""
        # Knative Service names are DNS labels: nothing in them needs escaping in a regex.
        names = sorted({s.split("/", 1)[1] for s in services if _DNS_LABEL.match(s.split("/", 1)[1])})
        alternatives = "|".join(names)
        return f'{self.query.service_label}=~"{alternatives}"'


def unsummed(query: MetricQuery) -> MetricQuery | None:
    """`query` without its `sum by (namespace, service)` when it sums the last sample in each
    minute of a recorded series (a recording rule's per-minute counts): the sum is then done
    here, per service, from the series' own values. Why: Prometheus' per-step aggregation is
    most of its work for this shape (about 3x the evaluation time of the unsummed query at
    2,000 series on 2 cores), and a recording rule writes one series per service, so the answer
    holds as many samples as the summed one would. Any other query (a counter's `increase` per
    pod, joins) is sent whole: its series can outnumber the services many times over."""
    match = _RECORDED.fullmatch(query.promql)
    if match is None or {match[1], match[2]} != {query.namespace_label, query.service_label}:
        return None
    return replace(query, promql=match[3])


def recorded(query: MetricQuery) -> MetricQuery | None:
    """The series selector of a recorded per-minute series (the shape `unsummed` takes apart),
    read as stored: its samples are the minutes' counts already (a recording rule wrote them),
    so a read returns them with no evaluation per step. None for any other query."""
    match = _RECORDED.fullmatch(query.promql)
    if match is None or {match[1], match[2]} != {query.namespace_label, query.service_label}:
        return None
    return replace(query, promql=match[4])


def _matrix(body: bytes) -> Iterator[tuple[dict, np.ndarray]]:
    """Scan a query_range answer (`{"status":"success","data":{"resultType":"matrix","result":
    [{"metric":{...},"values":[[t,"v"],...]},...]}}`) without building a Python object per sample.
    The byte patterns it looks for cannot occur inside a JSON string (a quote there is escaped),
    and a sample value is a number, "NaN" or "+Inf"/"-Inf": all of which numpy reads."""
    for labels, a, b in _sections(body):
        text = body[a:b].translate(_BRACKETS)
        pairs = np.fromstring(text, sep=",") if text.strip() else np.zeros(0)  # noqa: NPY201 - text mode
        if len(pairs) % 2:
            raise ValueError("a sample is not a [time, value] pair")
        yield labels, pairs


def _matrix_flat(body: bytes) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """`_matrix` in one piece: every series' labels, its number of samples, and all the
    [t, v] pairs back to back, read by one numpy call (not one per series: a top-up of 10,000
    short series spent more time on the calls than on the numbers). The values are joined from
    views of the answer (no copy per series)."""
    labels, spans, sizes = [], [], []
    view = memoryview(body)
    for metric, a, b in _sections(body):
        labels.append(metric)
        if b > a and body[a] == 0x5B:  # "[": a series with samples
            spans.append(view[a:b])
            sizes.append(body.count(b"],[", a, b) + 1)
        else:
            sizes.append(0)
    text = b",".join(spans).translate(_BRACKETS)
    del spans, view
    pairs = np.fromstring(text, sep=",") if sizes and sum(sizes) else np.zeros(0)  # noqa: NPY201 - text mode
    if len(pairs) != 2 * sum(sizes):
        raise ValueError("a sample is not a [time, value] pair")
    return labels, np.asarray(sizes, dtype=np.int64), pairs


def _sections(body: bytes) -> Iterator[tuple[dict, int, int]]:
    """Each series of a matrix answer: its labels, and where its values (the bytes `[t,"v"],...`)
    lie in `body`."""
    head = body.find(b'"result":[')
    if head < 0 or b'"resultType":"matrix"' not in body[:head]:
        raise ValueError("not a matrix answer")
    pos = head
    while True:
        start = body.find(b'{"metric":', pos)
        if start < 0:
            return
        values = body.find(b',"values":[', start)
        end = body.find(b"]]", values)
        if values < 0 or end < 0:
            raise ValueError("truncated matrix answer")
        yield orjson.loads(body[start + 10:values]), values + 11, end + 1
        pos = end
