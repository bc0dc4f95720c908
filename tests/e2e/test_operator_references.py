"""A spec the schema accepts but that cannot work: Degraded naming the problem, then fixed."""
from __future__ import annotations

import base64

import pytest
from operator_support import Kube, bemservice, condition, eventually, wait_ready

pytestmark = pytest.mark.e2e


def test_missing_secret_degrades_then_recovers_when_created(kube: Kube) -> None:
    kube.apply(bemservice("locked", auth={"apiKeySecretRef": {"name": "chat-keys"}}))

    bems = eventually("the Degraded phase", lambda: (
        b := kube.get("bemservices", "locked")) and (b.get("status") or {}).get(
        "phase") == "Degraded" and b)
    degraded = condition(bems, "Degraded")
    assert degraded["status"] == "True"
    assert degraded["reason"] == "SecretNotFound"
    assert "chat-keys" in degraded["message"]
    # No pods are rolled onto a Secret that does not exist.
    assert kube.get("deployment", "locked") is None
    warnings = eventually("a warning event", lambda: [
        e for e in kube.events_for("locked") if e["type"] == "Warning"])
    assert any("chat-keys" in e["message"] for e in warnings)

    kube.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "chat-keys"},
                "data": {"api-key": base64.b64encode(b"k-123").decode()}})
    bems = wait_ready(kube, "locked")
    assert condition(bems, "Degraded")["status"] == "False"
    volumes = kube.get("deployment", "locked")["spec"]["template"]["spec"]["volumes"]
    assert any((v.get("secret") or {}).get("secretName") == "chat-keys" for v in volumes)


def test_missing_secret_key_is_named(kube: Kube) -> None:
    kube.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cache"},
                "data": {"other": base64.b64encode(b"x").decode()}})
    kube.apply(bemservice("cached", cache={"redisUrlSecretRef": {"name": "cache"}}))
    bems = eventually("the Degraded phase", lambda: (
        b := kube.get("bemservices", "cached")) and (b.get("status") or {}).get(
        "phase") == "Degraded" and b)
    degraded = condition(bems, "Degraded")
    assert degraded["reason"] == "SecretKeyNotFound"
    assert "'cache'" in degraded["message"] and "redis-url" in degraded["message"]

    kube.patch("secret", "cache", {"stringData": {"redis-url": "redis://cache:6379/0"}})
    wait_ready(kube, "cached")
