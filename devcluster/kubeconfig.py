"""Kubeconfig files for the local control plane (client certificate or bearer token)."""

from __future__ import annotations

from pathlib import Path

import yaml

CONTEXT = "bem-devcluster"


def write(
    path: Path,
    *,
    server: str,
    ca_file: Path,
    user: str,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    token: str | None = None,
    namespace: str | None = None,
) -> Path:
    """Write a one-context kubeconfig; exactly one of cert/key or token authenticates."""
    if (token is None) == (cert_file is None or key_file is None):
        raise ValueError("give either cert_file and key_file, or token")
    if token is not None:
        credentials: dict[str, str] = {"token": token}
    else:
        credentials = {
            "client-certificate": str(cert_file),
            "client-key": str(key_file),
        }
    context: dict[str, str] = {"cluster": CONTEXT, "user": user}
    if namespace:
        context["namespace"] = namespace
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CONTEXT,
                "cluster": {"server": server, "certificate-authority": str(ca_file)},
            }
        ],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": CONTEXT, "context": context}],
        "current-context": CONTEXT,
        "preferences": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    # Tokens and key paths: private to the user.
    path.chmod(0o600)
    return path


def server_of(path: Path) -> str:
    """The API server URL of a kubeconfig's current context."""
    doc = yaml.safe_load(path.read_text())
    current = doc.get("current-context")
    contexts = {c["name"]: c["context"] for c in doc.get("contexts", [])}
    clusters = {c["name"]: c["cluster"] for c in doc.get("clusters", [])}
    if current not in contexts:
        raise ValueError(f"{path}: current-context {current!r} not found")
    return clusters[contexts[current]["cluster"]]["server"]
