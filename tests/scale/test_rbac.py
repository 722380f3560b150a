"""serving/rbac-scale*.yaml grants exactly what the scale function's code uses: every API call it
makes (recorded by the API double, which enforces those same rules) is allowed, and every verb
granted is used by some call. Run over both actuation paths."""

from __future__ import annotations

from tests.scale.conftest import LABEL, TICK0, decisions, forecast, minutes, rbac_rules, send
from localmode.kube_api_double import KubeApiDouble


def _exercise(double: KubeApiDouble, scale_fn) -> set[tuple[str, str, str]]:
    double.add_service("models", "wine", LABEL)
    fn = scale_fn(double)  # KNATIVE_VERSION=auto
    decisions(send(fn, forecast(TICK0, {"models/wine": minutes(15, 0.99)}, "rbac-1")))
    plural = "podautoscalers" if double.version == "1.20" else "revisions"
    group = "autoscaling.internal.knative.dev" if plural == "podautoscalers" else "serving.knative.dev"
    # a concurrent writer: the 409 is resolved by re-reading the object (get)
    double.before_next_patch(lambda: double.touch(group, plural, "models", "wine-00001", {"team": "x"}))
    decisions(send(fn, forecast(TICK0 + 3, {"models/wine": minutes(0, 0.0)}, "rbac-2")))
    assert all(call.status != 403 for call in double.requests), [c for c in double.requests if c.status == 403]
    return {(c.group, c.resource, c.verb) for c in double.requests}


def _granted(rules) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in rules for g in rule.api_groups for r in rule.resources for v in rule.verbs}


def test_revision_path_uses_exactly_what_is_granted(scale_fn):
    rules = rbac_rules()
    double = KubeApiDouble(rules, version="1.21")
    try:
        used = _exercise(double, scale_fn)
    finally:
        double.close()
    assert used == _granted(rules)
    assert ("autoscaling.internal.knative.dev", "podautoscalers", "patch") not in _granted(rules)
    assert not any(v in ("create", "delete", "update", "*") for _, _, v in _granted(rules))


def test_podautoscaler_path_uses_exactly_what_is_granted(scale_fn):
    rules = rbac_rules(legacy=True)
    double = KubeApiDouble(rules, version="1.20")
    try:
        used = _exercise(double, scale_fn)
    finally:
        double.close()
    revision_only = {("serving.knative.dev", "revisions", v) for v in ("get", "list", "patch")}
    assert used == _granted(rules) - revision_only


def test_namespace_read_is_limited_to_knative_serving():
    (rule,) = [r for r in rbac_rules() if "namespaces" in r.resources]
    assert rule.resource_names == ["knative-serving"] and rule.verbs == ["get"]
