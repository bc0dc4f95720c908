"""Leader election settings and arguments (the election itself runs against a real API server
in tests/e2e/test_leader_election.py)."""
from __future__ import annotations

import pytest

from bem_operator.leader import LeaderElector, LeaderSettings, LeaderSettingsError, client_user_agent
from bem_operator.metrics import LeaderMetrics


def test_defaults_are_off_with_the_usual_lease_name() -> None:
    settings = LeaderSettings.from_env({"POD_NAME": "op-1"})
    assert not settings.enabled and settings.lease_name == "bem-operator"
    assert settings.identity.startswith("op-1_")


def test_the_chart_env_turns_it_on_in_the_pod_namespace() -> None:
    env = {"BEM_OPERATOR_LEADER_ELECTION": "true", "BEM_OPERATOR_LEASE_NAME": "ops-lock",
           "POD_NAMESPACE": "bem-system", "POD_NAME": "bem-operator-7d9-x2"}
    settings = LeaderSettings.from_env(env)
    assert (settings.enabled, settings.lease_name, settings.lease_namespace) == (
        True, "ops-lock", "bem-system")
    assert LeaderSettings.from_env({**env, "BEM_OPERATOR_LEASE_NAMESPACE": "elsewhere"}
                                   ).lease_namespace == "elsewhere"


def test_each_process_is_a_new_candidate() -> None:
    """A restarted container keeps its pod name; it must not pass for the old holder."""
    env = {"POD_NAME": "bem-operator-7d9-x2"}
    first, second = LeaderSettings.from_env(env), LeaderSettings.from_env(env)
    assert first.identity != second.identity
    assert client_user_agent(first.identity) == f"bem-operator/{first.identity}"


@pytest.mark.parametrize(("env", "message"), [
    ({"BEM_OPERATOR_LEADER_ELECTION": "sometimes"}, "BEM_OPERATOR_LEADER_ELECTION='sometimes'"),
    ({"BEM_OPERATOR_LEASE_NAME": "Bad_Name"}, "BEM_OPERATOR_LEASE_NAME='Bad_Name'"),
    ({"BEM_OPERATOR_LEADER_ELECTION": "1"}, "set BEM_OPERATOR_LEASE_NAMESPACE, or POD_NAMESPACE"),
])
def test_bad_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(LeaderSettingsError, match=message.replace("(", r"\(")):
        LeaderSettings.from_env(env)


def test_timings_must_nest() -> None:
    with pytest.raises(ValueError, match="lease_seconds > renew_deadline > retry_period"):
        LeaderElector(None, "ns", "lease", "me", lease_seconds=10, renew_deadline=10)  # type: ignore[arg-type]


def test_a_new_elector_does_not_lead_and_exports_zeros() -> None:
    metrics = LeaderMetrics()
    elector = LeaderElector(None, "ns", "lease", "me", metrics=metrics)  # type: ignore[arg-type]
    assert not elector.is_leader
    assert metrics.registry.get_sample_value("bem_operator_leader") == 0
    for change in ("gained", "lost"):
        assert metrics.registry.get_sample_value(
            "bem_operator_leader_transitions_total", {"change": change}) == 0
