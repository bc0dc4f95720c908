"""The audit log (devcluster/audit.py): the writes of the operator namespace's ServiceAccounts,
with their User-Agent, and nobody else's."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
import yaml

from devcluster import audit
from devcluster.health import wait_until

pytestmark = pytest.mark.e2e


def test_writes_of_the_operator_namespace_accounts_are_logged_and_others_are_not(
        cluster: Any, namespace: str) -> None:
    if not hasattr(cluster, "state_dir"):
        pytest.skip("an attached cluster's API server flags are not this checkout's")
    ns = audit.OPERATOR_NAMESPACE
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
    account = f"audit-{secrets.token_hex(3)}"
    cluster.kubectl("create", "serviceaccount", account, "-n", ns)
    kubeconfig = cluster.kubeconfig_for_service_account(ns, account)
    ours, theirs = f"ours-{secrets.token_hex(3)}", f"theirs-{secrets.token_hex(3)}"
    # The account may not create ConfigMaps: the refused write is logged, with its answer.
    refused = cluster.kubectl("--kubeconfig", str(kubeconfig), "create", "configmap", ours,
                              "-n", namespace, check=False)
    assert refused.returncode != 0
    # The admin's writes are not logged (a patch names its object in the URL, so it would show).
    cluster.kubectl("create", "configmap", theirs, "-n", namespace)
    cluster.kubectl("label", "configmap", theirs, "-n", namespace, "audited=no")

    def logged() -> list[dict[str, Any]]:
        # A create names its object only in the body, which the Metadata level leaves out.
        return [e for e in audit.events(cluster.state_dir)
                if e["user"]["username"].endswith(f":{account}")
                or e.get("objectRef", {}).get("name") == theirs]
    wait_until("the account's write in the audit log", lambda: bool(logged()), timeout=30)
    [event] = logged()
    assert event["user"]["username"] == f"system:serviceaccount:{ns}:{account}"
    assert (event["verb"], event["objectRef"]["resource"]) == ("create", "configmaps")
    assert event["requestURI"].startswith(f"/api/v1/namespaces/{namespace}/configmaps")
    assert event["responseStatus"]["code"] == 403 and event["userAgent"].startswith("kubectl")
    assert event["level"] == "Metadata" and "requestObject" not in event
    cluster.kubectl("delete", "serviceaccount", account, "-n", ns)
