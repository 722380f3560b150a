"""serving/rbac-scale*.yaml grants exactly what the scale function's code uses: every API call it
makes (recorded by the API double, which enforces those same rules) is allowed, and every verb
granted is used by some call. Run over both actuation paths."""

from __future__ import annotations

from tests.scale.conftest import LABEL, TICK0, decisions, forecast, minutes, rbac_rules, send
from localmode.kube_api_double import KubeApiDouble


def _exercise(double: KubeApiDouble, scale_fn, extra: dict | None = None,
              before_first=None) -> set[tuple[str, str, str]]:
    double.add_service("models", "wine", LABEL)
    fn = scale_fn(double)  # KNATIVE_VERSION=auto
    if before_first is not None:
        before_first()
    decisions(send(fn, forecast(TICK0, {"models/wine": minutes(15, 0.99), **(extra or {})}, "rbac-1")))
    plural = "podautoscalers" if double.version == "1.20" else "revisions"
    group = "autoscaling.internal.knative.dev" if plural == "podautoscalers" else "serving.knative.dev"
    # a concurrent writer: the 409 is resolved by re-reading the object (get)
    double.before_next_patch(lambda: double.touch(group, plural, "models", "wine-00001", {"team": "x"}))
    decisions(send(fn, forecast(TICK0 + 3, {"models/wine": minutes(0, 0.0), **(extra or {})}, "rbac-2")))
    assert all(call.status != 403 for call in double.requests), [c for c in double.requests if c.status == 403]
    return {(c.group, c.resource, c.verb) for c in double.requests}


OPERATOR_FALLBACK = {("apps", "deployments", "get")}
"""Used only where the knative-serving namespace has no version label (Knative Operator installs):
test_operator_install_reads_the_controller_deployment_version covers it."""


def _granted(rules) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in rules for g in rule.api_groups for r in rule.resources for v in rule.verbs}


def test_revision_path_uses_exactly_what_is_granted(scale_fn):
    rules = rbac_rules()
    double = KubeApiDouble(rules, version="1.21")
    try:
        used = _exercise(double, scale_fn)
    finally:
        double.close()
    assert used == _granted(rules) - OPERATOR_FALLBACK
    assert ("autoscaling.internal.knative.dev", "podautoscalers", "patch") not in _granted(rules)
    assert not any(v in ("create", "delete", "update", "*") for _, _, v in _granted(rules))


def test_podautoscaler_path_uses_exactly_what_is_granted(scale_fn):
    rules = rbac_rules(legacy=True)
    double = KubeApiDouble(rules, version="1.20")
    try:
        used = _exercise(double, scale_fn)
    finally:
        double.close()
    revision_only = {("serving.knative.dev", "revisions", v) for v in ("get", "list", "watch", "patch")}
    assert used == _granted(rules) - revision_only - OPERATOR_FALLBACK


def test_operator_install_reads_the_controller_deployment_version(scale_fn):
    """KNATIVE_VERSION=auto on a Knative Operator install: the knative-serving namespace carries no
    version label, the `controller` Deployment does (both installs ship it labelled); the function
    reads that one object, as granted, and actuates on the Revision (>= 1.21)."""
    rules = rbac_rules()
    double = KubeApiDouble(rules, version="1.21")
    try:
        double.add_namespace("knative-serving", {})  # what the Operator leaves
        double.put_object("apps", "deployments", "knative-serving", {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "controller", "namespace": "knative-serving",
                         "labels": {"app.kubernetes.io/name": "knative-serving", "app.kubernetes.io/version": "1.21.1"}}})
        used = _exercise(double, scale_fn)
        assert double.annotations("revisions", "models", "wine-00001").get("autoscaling.knative.dev/min-scale")
    finally:
        double.close()
    assert OPERATOR_FALLBACK <= used
    assert used == _granted(rules)
    (rule,) = [r for r in rules if "deployments" in r.resources]
    assert rule.resource_names == ["controller"] and rule.namespace == "knative-serving" and rule.verbs == ["get"]


def test_namespace_read_is_limited_to_knative_serving():
    (rule,) = [r for r in rbac_rules() if "namespaces" in r.resources]
    assert rule.resource_names == ["knative-serving"] and rule.verbs == ["get"]


def test_placement_path_uses_exactly_what_is_granted(scale_fn):
    """With the model pool (serving/pool/ bound too): list the DomainMappings, patch one to move a
    model, get it after a conflict, and nothing else beyond the Revision path's calls."""
    from localmode.kube_api_double import scale_function_rules
    from tests.support.servers import ROOT

    rules = scale_function_rules(ROOT, placement=True)
    double = KubeApiDouble(rules, version="1.21")
    try:
        double.add_service("models", "infer-pool", {**LABEL, "predictive-scaling.io/pool": "true"})
        double.add_service("models", "infer-diabetes", LABEL)
        double.add_domain_mapping("models", "diabetes.models.example.com", "infer-pool",
                                  labels={"predictive-scaling.io/model": "diabetes"},
                                  annotations={"predictive-scaling.io/dedicated-service": "infer-diabetes"})
        double.set_actual_replicas("models", "infer-diabetes-00001", 1)
        # a pooled neighbour, a one-model pod and a second a load: the pool cannot hold both, so the busy one leaves
        double.add_service("models", "infer-iris", LABEL)
        double.add_domain_mapping("models", "iris.models.example.com", "infer-pool",
                                  labels={"predictive-scaling.io/model": "iris"},
                                  annotations={"predictive-scaling.io/dedicated-service": "infer-iris"})
        used = _exercise(double, lambda d: scale_fn(d, PLACEMENT_EVERY_MINUTES="1", PLACEMENT_HOLD_MINUTES="0",
                                                    POOL_MODELS_PER_POD="1", POOL_MODEL_LOAD_MS="1000"),
                         extra={"models/diabetes": minutes(9, 1.0, point_rps=8), "models/iris": minutes(2, 1.0, point_rps=1)},
                         before_first=lambda: double.before_next_patch(lambda: double.touch(
                             "serving.knative.dev", "domainmappings", "models", "diabetes.models.example.com",
                             {"team": "x"})))
        assert double.get("serving.knative.dev", "domainmappings", "models",
                          "diabetes.models.example.com")["spec"]["ref"]["name"] == "infer-diabetes"
    finally:
        double.close()
    assert used == _granted(rules) - OPERATOR_FALLBACK
    assert {("serving.knative.dev", "domainmappings", v) for v in ("get", "list", "patch")} <= used
    assert not any(v in ("create", "delete", "update", "*") for _, _, v in _granted(rules))
