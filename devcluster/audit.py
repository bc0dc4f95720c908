"""The API server's audit log, kept small: only the writes of the operator's namespace's
ServiceAccounts, at Metadata level (who, when, which object, which answer; no bodies).

Tests read it to prove who wrote what, and in which order: two operator replicas share one
ServiceAccount, and tell themselves apart by their User-Agent (bem_operator.leader).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

# The namespace the chart, the manifests and the operator tests install the operator in.
OPERATOR_NAMESPACE = "bem-system"
WRITE_VERBS = ["create", "update", "patch", "delete", "deletecollection"]
POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],  # one event per request, when the answer is sent
    "rules": [
        {"level": "Metadata", "verbs": WRITE_VERBS,
         "userGroups": [f"system:serviceaccounts:{OPERATOR_NAMESPACE}"]},
        {"level": "None"},
    ],
}


def policy_path(state_dir: Path) -> Path:
    return state_dir / "audit-policy.yaml"


def log_path(state_dir: Path) -> Path:
    return state_dir / "logs" / "kube-apiserver-audit.log"


def apiserver_flags(state_dir: Path) -> list[str]:
    return [f"--audit-policy-file={policy_path(state_dir)}",
            f"--audit-log-path={log_path(state_dir)}", "--audit-log-format=json"]


def write_policy(state_dir: Path) -> None:
    policy_path(state_dir).write_text(yaml.safe_dump(POLICY, sort_keys=False))


def events(state_dir: Path) -> Iterator[dict[str, Any]]:
    """The audit events written so far, oldest first."""
    path = log_path(state_dir)
    if not path.is_file():
        return
    with path.open() as log:
        for line in log:
            if line.strip():
                yield json.loads(line)
