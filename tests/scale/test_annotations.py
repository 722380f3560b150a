"""Per-service settings from annotations (pure): defaults, overrides, the Service's own bounds,
and refusal of anything that does not parse (a typo must skip the service, never scale it)."""

from __future__ import annotations

import pytest

from scale.annotations import BadAnnotation, parse_window, service_policy
from scale.min_scale_policy import PolicySettings

DEFAULTS = PolicySettings()


def ksvc(annotations=None, template=None) -> dict:
    return {"metadata": {"annotations": annotations or {}},
            "spec": {"template": {"metadata": {"annotations": template or {}}}}}


def test_defaults_apply_without_annotations():
    policy = service_policy(ksvc(), DEFAULTS, dry_run_default=False)
    assert policy.settings == DEFAULTS and not policy.dry_run and policy.may_set_window and policy.user_window is None


def test_annotations_override_and_the_services_own_bounds_clamp():
    policy = service_policy(ksvc(
        {"predictive-scaling.io/pod-capacity": "250", "predictive-scaling.io/cold-start-cost": "600",
         "predictive-scaling.io/max": "8", "predictive-scaling.io/cooldown": "120",
         "predictive-scaling.io/idle-window": "off", "predictive-scaling.io/dry-run": "true"},
        {"autoscaling.knative.dev/max-scale": "3", "autoscaling.knative.dev/min-scale": "1"}), DEFAULTS, False)
    s = policy.settings
    assert (s.capacity_rps, s.cold_start_cost_pod_s, s.cooldown_s, s.idle_window_s) == (250, 600, 120, None)
    assert (s.min_scale, s.max_scale) == (1, 3) and policy.dry_run
    busy = service_policy(ksvc({"predictive-scaling.io/busy-window": "15s"}), DEFAULTS, False).settings
    assert busy.busy_window_s == 15 and busy.idle_window_s is None


def test_a_window_the_user_set_is_kept_unless_managed():
    mine = service_policy(ksvc(template={"autoscaling.knative.dev/window": "120s"}), DEFAULTS, False)
    assert mine.user_window == "120s" and not mine.may_set_window
    managed = service_policy(ksvc({"predictive-scaling.io/manage-window": "true"},
                                  {"autoscaling.knative.dev/window": "120s"}), DEFAULTS, False)
    assert managed.may_set_window


@pytest.mark.parametrize("key,value", [
    ("pod-capacity", "fast"), ("pod-capacity", "0"), ("pod-capacity", "-3"), ("pod-capacity", "nan"),
    ("min", "1.5"), ("max", "x"), ("cooldown", "-1"), ("idle-window", "2s"), ("idle-window", "2h"),
    ("busy-window", "5s"), ("busy-window", "2h"), ("busy-window", "fast"),
    ("dry-run", "maybe"), ("min", "20"),
])
def test_bad_values_are_refused(key, value):
    with pytest.raises(BadAnnotation):
        service_policy(ksvc({f"predictive-scaling.io/{key}": value}), DEFAULTS, False)


def test_window_parsing_follows_knatives_bounds():
    assert parse_window("6s") == 6 and parse_window("1m") == 60 and parse_window("off") is None
    for bad in ("5s", "61m", "six"):
        with pytest.raises(ValueError):
            parse_window(bad)


def test_the_one_knob_table_is_the_policy_s_defaults_and_the_settings_reference_s_table():
    from dataclasses import fields

    from scale.policy_knobs import KNOBS, defaults_from_env, markdown_table
    from tests.support.servers import ROOT

    assert defaults_from_env({}) == PolicySettings()
    assert {k.field for k in KNOBS} <= {f.name for f in fields(PolicySettings)}
    page = ROOT / "docs" / "reference" / "settings.md"
    assert markdown_table() in page.read_text(), "the settings reference drifted: python scripts/gen_settings_reference.py"


def test_environment_knobs_parse_like_annotations():
    from scale.settings import ScaleSettings, SettingsError

    s = ScaleSettings.from_env({"POD_CAPACITY_RPS": "250", "IDLE_WINDOW": "6s", "BUSY_WINDOW": "15s", "BURST_RISK": "off"}).policy
    assert (s.capacity_rps, s.idle_window_s, s.busy_window_s, s.burst_risk) == (250, 6, 15, None)
    assert ScaleSettings.from_env({"BUSY_WINDOW": "off"}).policy.busy_window_s is None
    assert ScaleSettings.from_env({}).policy.busy_window_s is None  # off unless set
    for bad in ({"POD_CAPACITY_RPS": "0"}, {"BURST_RISK": "1.5"}, {"IDLE_WINDOW": "2s"}, {"BUSY_WINDOW": "1h1s"},
                {"MAX_SCALE": "0"}):
        with pytest.raises(SettingsError, match=next(iter(bad))):
            ScaleSettings.from_env(bad)
