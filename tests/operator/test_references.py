"""Secrets, Secret keys and PVCs a rendered pod template needs."""
from __future__ import annotations

from builders_factory import build_deployment, make_bems

from bem_operator.references import Reference, required_references


def test_references_of_a_rendered_deployment() -> None:
    bems = make_bems({"model": {"claimName": "models"},
                      "auth": {"apiKeySecretRef": {"name": "keys"}},
                      "cache": {"redisUrlSecretRef": {"name": "redis", "key": "url"}}})
    refs = set(required_references(build_deployment(bems)))
    assert Reference("PersistentVolumeClaim", "models") in refs
    assert Reference("Secret", "redis", "url") in refs
    assert any(r.kind == "Secret" and r.name == "keys" for r in refs)


def test_optional_references_are_left_out_and_all_sources_found() -> None:
    pod = {"volumes": [
        {"name": "a", "secret": {"secretName": "opt", "optional": True}},
        {"name": "b", "secret": {"secretName": "whole"}},
        {"name": "c", "projected": {"sources": [{"secret": {"name": "proj", "items": [
            {"key": "k", "path": "k"}]}}]}},
    ], "initContainers": [{"name": "init", "envFrom": [{"secretRef": {"name": "env-all"}}]}],
        "containers": [{"name": "c", "env": [
            {"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "x"}}},
            {"name": "Y", "valueFrom": {"secretKeyRef": {"name": "s", "key": "y",
                                                         "optional": True}}}]}]}
    refs = required_references({"spec": {"template": {"spec": pod}}})
    assert refs == sorted([Reference("Secret", "whole"), Reference("Secret", "proj", "k"),
                           Reference("Secret", "env-all"), Reference("Secret", "s", "x")])
    assert Reference("Secret", "s", "x").describe() == "Secret 's' (key 'x')"
