"""The scale function's Prometheus metrics, scraped from the real process after real events:
values checked against what the events decided and what the API double received."""

from __future__ import annotations

from collections import Counter

from localmode.processes import free_port
from tests.scale.conftest import LABEL, TICK0, by_service, decisions, forecast, minutes, send
from tests.support.metrics import scrape

MIN = "autoscaling.knative.dev/min-scale"


def api_counts(double) -> Counter:
    return Counter((r.verb, str(r.status)) for r in double.requests)


def test_metrics_count_every_decision_and_match_the_cluster(api_double, scale_fn):
    for name in ("wine", "iris", "digits"):
        api_double.add_service("models", name, LABEL)
    api_double.add_service("models", "plain")  # not opted in
    port = free_port()
    fn = scale_fn(api_double, METRICS_PORT=str(port), METRICS_ADDRESS="127.0.0.1")
    url = f"http://127.0.0.1:{port}/metrics"
    before = scrape(url)
    assert before.value("scale_decisions_total", outcome="raised", reason="forecast") == 0

    data = decisions(send(fn, forecast(TICK0, {
        "models/wine": minutes(upper_rps=42, p_any=0.99),      # raised 0 -> 5, from zero
        "models/iris": minutes(upper_rps=0.0, p_any=0.001),    # held at 0 by the forecast
        "models/digits": "prometheus unavailable",             # held: no data
        "models/plain": minutes(upper_rps=42, p_any=0.99),     # skipped: not opted in
    }, "m1")))
    after = scrape(url)
    assert by_service(data)["models/wine"]["min_scale"] == 5
    rose = {(o, r): after.value("scale_decisions_total", outcome=o, reason=r)
            - before.value("scale_decisions_total", outcome=o, reason=r)
            for o, r in (("raised", "forecast"), ("held", "forecast"), ("held", "no_data"), ("skipped", "not_opted_in"))}
    assert rose == {("raised", "forecast"): 1, ("held", "forecast"): 1, ("held", "no_data"): 1,
                    ("skipped", "not_opted_in"): 1}
    # exactly one per service the event named
    assert after.total("scale_decisions_total") - before.total("scale_decisions_total") == 4
    assert after.value("scale_prewarms_from_zero_total") == 1
    assert after.value("scale_events_total", outcome="decided") == 1
    # the gauge is what the cluster now carries
    for name in ("wine", "iris", "digits"):
        carried = int(api_double.annotations("revisions", "models", f"{name}-00001").get(MIN, "0"))
        assert after.value("scale_min_scale", namespace="models", service=name) == carried
    assert after.value("scale_min_scale", namespace="models", service="wine") == 5
    assert not after.has("scale_min_scale", namespace="models", service="plain")
    assert after.value("scale_warm_pods") == 5
    # API calls by verb and code: exactly what the double answered
    seen = api_counts(api_double)
    for (verb, code), n in seen.items():
        assert after.value("scale_kubernetes_api_requests_total", verb=verb, code=code) == n, (verb, code)
    assert after.total("scale_kubernetes_api_requests_total") == sum(seen.values())
    applied = sum(d["applied"] for d in data["decisions"])
    assert seen[("patch", "200")] == applied and after.total("scale_kubernetes_api_failures_total") == 0

    # a transient API failure is counted as one, the retried patch as a success
    api_double.fail(lambda r: r.verb == "patch", 500, times=1)
    second = decisions(send(fn, forecast(TICK0 + 1, {"models/wine": minutes(42, 0.99),
                                                     "models/iris": minutes(25, 0.99)}, "m2")))
    applied += sum(d["applied"] for d in second["decisions"])
    third = scrape(url)
    assert third.value("scale_kubernetes_api_failures_total", verb="patch", code="500") == 1
    seen = api_counts(api_double)
    assert seen[("patch", "500")] == 1
    assert third.value("scale_kubernetes_api_requests_total", verb="patch", code="200") == seen[("patch", "200")] == applied
    assert third.value("scale_min_scale", namespace="models", service="iris") == 3  # ceil(25 / 10)
    assert third.value("scale_prewarms_from_zero_total") == 2
    assert third.value("scale_decisions_total", outcome="held", reason="forecast") == 2  # iris once, wine now
    assert third.value("scale_warm_pods") == 8

    # a duplicate counts as an event, never as decisions
    send(fn, forecast(TICK0 + 1, {"models/wine": minutes(42, 0.99)}, "m2"))
    fourth = scrape(url)
    assert fourth.value("scale_events_total", outcome="duplicate") == 1
    assert fourth.total("scale_decisions_total") == third.total("scale_decisions_total")


def test_per_service_series_are_bounded(api_double, scale_fn):
    names = [f"svc-{i}" for i in range(5)]
    for name in names:
        api_double.add_service("models", name, LABEL)
    port = free_port()
    fn = scale_fn(api_double, METRICS_PORT=str(port), METRICS_ADDRESS="127.0.0.1", METRICS_MAX_SERVICES="2")
    services = {f"models/{n}": minutes(0.0, 0.001) for n in names}
    services["models/svc-3"] = minutes(15, 0.99)
    decisions(send(fn, forecast(TICK0, services, "b1")))
    got = scrape(f"http://127.0.0.1:{port}/metrics")
    exported = {dict(labels)["service"]: v for labels, v in got.series("scale_min_scale").items()}
    # the warm one first, then by name
    assert exported == {"svc-3": 2, "svc-0": 0}
    assert got.value("scale_metrics_services_omitted") == 3 and got.value("scale_warm_pods") == 2
