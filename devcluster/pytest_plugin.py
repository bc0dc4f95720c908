"""pytest fixtures for the local control plane (imported by tests/conftest.py).

- `cluster` (session): started once, on first use, in a temp folder, and torn
  down at session end, on failure, Ctrl-C or SIGTERM. With
  BEM_DEVCLUSTER_KUBECONFIG set, an already running cluster is reused instead
  (fast dev loop: `bem-devcluster up` once, then run the tests many times).
- `namespace` (function): a fresh random namespace, deleted afterwards.

Missing binaries are built before the first test (never skipped: CI must run
the e2e tier); the build runs outside any test so the per-test timeout does
not cut it short.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from devcluster import binaries
from devcluster.client import AttachedCluster, Client
from devcluster.cluster import DevCluster
from devcluster.health import wait_until

ENV_REUSE = "BEM_DEVCLUSTER_KUBECONFIG"
NEEDS_CLUSTER = {"cluster", "namespace"}


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the binaries up front when any collected test needs the cluster."""
    if session.config.option.collectonly:
        return
    if any(NEEDS_CLUSTER & set(getattr(item, "fixturenames", ())) for item in session.items):
        binaries.ensure(build_if_missing=True)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Client]:
    reuse = os.environ.get(ENV_REUSE)
    if reuse:
        handle: Client = AttachedCluster(Path(reuse).expanduser(), binaries.ensure())
    else:
        handle = DevCluster.start()
    try:
        yield handle
    finally:
        handle.stop()  # type: ignore[attr-defined]


@contextlib.contextmanager
def fresh_namespace(cluster: Client, prefix: str = "t") -> Iterator[str]:
    """A new random namespace, ready for pods; deleted (without waiting) afterwards."""
    name = f"{prefix}-{secrets.token_hex(4)}"
    cluster.kubectl("create", "namespace", name)
    cluster.kubectl("label", "namespace", name, "bem.ai/test=true")
    # Pods are refused until the namespace's default ServiceAccount exists.
    wait_until(
        f"ServiceAccount {name}/default",
        lambda: cluster.kubectl("get", "sa", "default", "-n", name, check=False).returncode
        == 0,
        timeout=60,
    )
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def namespace(cluster: Client) -> Iterator[str]:
    with fresh_namespace(cluster) as name:
        yield name
