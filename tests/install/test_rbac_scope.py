"""The RBAC rules grant exactly what the child-kind registry (builders/kinds.py) needs.

The e2e tier proves the rules are sufficient (the operator runs with them); this proves, from
the registry every part of the operator derives its kinds from, that both rule sets
(manifests/rbac.yaml and the chart's _rbac-rules.tpl) grant nothing the operator never uses and
forget nothing it starts to use. A failure names the missing or extra rule.
"""

from __future__ import annotations

import re

import pytest
import yaml

from bem_operator.builders import build_children
from bem_operator.builders.kinds import BEMCHECKPOINT, BEMSERVICE, CHILD_REGISTRY, POD, READ_REGISTRY
from bem_operator.handlers import BEMSERVICES
from bem_operator.k8s import object_path
from bem_operator.watches import WATCHED_KINDS

from .support import CHART, MANIFESTS, by_kind, load_yaml_docs, rule_set

Rule = tuple[str, str, str]  # apiGroup, resource, verb

# The custom resources: listed and watched (never written but for their status, by merge
# patch); the reconcile posts core/v1 events. Not child kinds, so fixed here.
PARENT_RULES: set[Rule] = {
    *((kind.group, kind.plural, verb) for kind in (BEMSERVICE, BEMCHECKPOINT)
      for verb in ("list", "watch")),
    *((kind.group, f"{kind.plural}/status", "patch") for kind in (BEMSERVICE, BEMCHECKPOINT)),
    ("", "events", "create"),
}


def expected_rules() -> set[Rule]:
    rules = set(PARENT_RULES)
    for kind in (*CHILD_REGISTRY, *READ_REGISTRY):
        rules |= {(kind.group, kind.plural, verb) for verb in kind.verbs}
    return rules


def _manifest_rules() -> set[Rule]:
    [role] = by_kind(load_yaml_docs(MANIFESTS / "rbac.yaml"), "ClusterRole")
    return rule_set(role["rules"])


def _chart_rules() -> set[Rule]:
    """The chart's rule list, read from its template (a plain YAML list inside a define)."""
    text = (CHART / "templates" / "_rbac-rules.tpl").read_text()
    body = re.search(r'{{-? define "bem-operator.rbacRules" -?}}(.*?){{-? end -?}}', text, re.S)
    assert body, "no bem-operator.rbacRules define in _rbac-rules.tpl"
    return rule_set(yaml.safe_load(body.group(1)))


@pytest.mark.parametrize("source", ["manifests/rbac.yaml", "helm _rbac-rules.tpl"])
def test_rules_grant_exactly_what_the_registry_needs(source: str) -> None:
    granted = _manifest_rules() if source.startswith("manifests") else _chart_rules()
    expected = expected_rules()
    missing = sorted(expected - granted)
    extra = sorted(granted - expected)
    assert not missing and not extra, (
        f"{source}: (apiGroup, resource, verb) missing: {missing}; extra: {extra}")


def test_watches_and_paths_come_from_the_registry() -> None:
    assert WATCHED_KINDS == (*CHILD_REGISTRY, POD)  # runtime pods: read-only, for status
    assert BEMSERVICES == (BEMSERVICE.group, BEMSERVICE.version, BEMSERVICE.plural)
    for kind in (*CHILD_REGISTRY, *READ_REGISTRY, BEMSERVICE, BEMCHECKPOINT):
        assert object_path(kind.api_version, kind.kind, "ns").endswith(f"/ns/{kind.plural}")


def test_pods_are_only_read() -> None:
    [pods] = [k for k in READ_REGISTRY if k.plural == "pods"]
    assert pods.watched and pods.verbs == {"list", "watch"}


def test_always_built_children_are_the_ones_never_deleted() -> None:
    """A kind without the delete verb must come from every spec (else it could not be removed)."""
    minimal = {"apiVersion": "bem.ai/v1alpha1", "kind": "BEMService",
               "metadata": {"name": "x", "namespace": "ns", "uid": "u"},
               "spec": {"model": {"claimName": "models"}, "disruptionBudget": {"enabled": False},
                        "monitoring": {"serviceMonitor": False},
                        "networkPolicy": {"enabled": False}}}
    built = {(c["apiVersion"], c["kind"]) for c in build_children(minimal)}
    assert built == {c.key for c in CHILD_REGISTRY if c.always}
    assert all(("delete" in c.verbs) is not c.always for c in CHILD_REGISTRY)
