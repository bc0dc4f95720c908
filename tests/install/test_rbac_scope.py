"""The RBAC rules cover exactly the resources the operator's code touches.

The e2e tier proves the rules are sufficient (the operator runs with them); this proves,
from the operator's own tables, that no resource is granted that it never uses and that a
resource it starts to use is not forgotten.
"""

from __future__ import annotations

from bem_operator.builders import CHILD_KINDS
from bem_operator.handlers import BEMSERVICES
from bem_operator.k8s import BEMSERVICE_API, PLURALS
from bem_operator.kopf_config import CHILD_RESOURCES, WATCHED_RESOURCES

from .support import MANIFESTS, by_kind, load_yaml_docs, rule_set

READ_ONLY = {"get"}
WATCHED = {"get", "list", "watch"}
# Every child is watched by owner label and written by server-side apply.
WATCH_AND_APPLY = {"list", "watch", "create", "patch"}
# Read back by reconcile.py (status, replicas hand-over), never deleted: always wanted.
READ_BACK = {("apps", "deployments")}
# Always built by build_children, so never obsolete; the other kinds are optional.
ALWAYS_WANTED = {("apps", "deployments"), ("", "services")}


def _granted() -> dict[tuple[str, str], set[str]]:
    [role] = by_kind(load_yaml_docs(MANIFESTS / "rbac.yaml"), "ClusterRole")
    granted: dict[tuple[str, str], set[str]] = {}
    for group, resource, verb in rule_set(role["rules"]):
        granted.setdefault((group, resource), set()).add(verb)
    return granted


def _group(api_version: str) -> str:
    return api_version.split("/")[0] if "/" in api_version else ""


def test_granted_resources_are_the_ones_the_operator_uses() -> None:
    used = {(_group(api_version), plural) for (api_version, _), plural in PLURALS.items()}
    used |= {(group, plural) for group, _, plural in CHILD_RESOURCES + WATCHED_RESOURCES}
    used |= {(BEMSERVICES[0], f"{BEMSERVICES[2]}/status"), ("", "events")}
    assert set(_granted()) == used


def test_children_get_the_verbs_of_watch_apply_and_cleanup() -> None:
    granted = _granted()
    for group, _, plural in CHILD_RESOURCES:
        key = (group, plural)
        expected = set(WATCH_AND_APPLY)
        expected |= READ_ONLY if key in READ_BACK else set()
        expected |= set() if key in ALWAYS_WANTED else {"delete"}
        assert granted[key] == expected, plural


def test_watched_resources_are_only_read() -> None:
    granted = _granted()
    for group, _, plural in WATCHED_RESOURCES:
        assert granted[group, plural] == WATCHED, plural


def test_always_wanted_children_are_the_first_the_builders_return() -> None:
    # CHILD_KINDS is in apply order; Deployment and Service come from every spec.
    always = {(_group(v), PLURALS[v, k]) for v, k in CHILD_KINDS[:2]}
    assert always == ALWAYS_WANTED


def test_references_are_only_read_never_listed() -> None:
    granted = _granted()
    children = {(g, p) for g, _, p in CHILD_RESOURCES}
    bemservice = (_group(BEMSERVICE_API[0]), BEMSERVICES[2])
    for (api_version, _), plural in PLURALS.items():
        key = (_group(api_version), plural)
        if key not in children and key != bemservice:
            assert granted[key] == READ_ONLY, f"{plural}: only get is needed to check it exists"


def test_bemservices_are_watched_and_annotated_not_created_or_deleted() -> None:
    granted = _granted()
    group, _, plural = BEMSERVICES
    assert granted[group, plural] == WATCHED | {"patch"}
    assert granted[group, f"{plural}/status"] == {"patch"}
    assert granted["", "events"] == {"create"}
