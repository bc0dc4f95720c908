"""The operator runs with the chart's own ServiceAccount, in namespaced mode: Roles only.

The operator e2e tier already runs with manifests/rbac.yaml (cluster-wide); this is the
other half: a real operator process, authenticated as the ServiceAccount a namespaced Helm
release creates, reconciles BEMServices in the watched namespace without a single refusal.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devcluster.health import wait_until
from devcluster.processes import free_port

from .support import CHART, MANIFESTS, ROOT, Helm

pytestmark = pytest.mark.e2e

# Not a bare "403": log timestamps have milliseconds (",403") too.
REFUSALS = ("HTTP 403", " 403 ", "Forbidden", "forbidden")


@pytest.fixture
def namespaced_release(cluster: Any, tmp_path: Path, namespace: str) -> Iterator[str]:
    """A release watching only `namespace`; yields its ServiceAccount's name."""
    env = {**cluster.env(), **{f"HELM_{k}_HOME": str(tmp_path / k.lower())
                               for k in ("CACHE", "CONFIG", "DATA")}}
    helm = Helm(Path(cluster.helm_bin), env)
    helm.run("install", "bem", str(CHART), "-n", namespace,
             "--set", f"watchNamespaces={{{namespace}}}")
    yield "bem-bem-operator"
    helm.run("uninstall", "bem", "-n", namespace, "--wait", check=False)


@pytest.fixture
def operator_log(cluster: Any, namespace: str, namespaced_release: str,
                 tmp_path: Path) -> Iterator[Path]:
    """`python -m bem_operator` with the release's token, stopped with SIGTERM afterwards."""
    kubeconfig = cluster.kubeconfig_for_service_account(namespace, namespaced_release)
    log = tmp_path / "operator.log"
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "BEM_OPERATOR_NAMESPACES": namespace,
           "BEM_OPERATOR_BIND_ADDRESS": "127.0.0.1", "BEM_OPERATOR_RESYNC_SECONDS": "5",
           "BEM_OPERATOR_METRICS_PORT": str(free_port()),
           "BEM_OPERATOR_HEALTH_PORT": str(free_port())}
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "bem_operator"], env=env, cwd=ROOT,
                                   stdout=out, stderr=subprocess.STDOUT)
    try:
        yield log
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _phase(cluster: Any, namespace: str, name: str) -> str | None:
    out = cluster.kubectl("get", "bemservice", name, "-n", namespace, "-o", "json", check=False)
    return json.loads(out.stdout).get("status", {}).get("phase") if out.returncode == 0 else None


def test_operator_reconciles_with_the_namespaced_release_rights(
    cluster: Any, namespace: str, operator_log: Path
) -> None:
    # bem-baked needs no volume (Ready); bem-cpu names a missing claim (Degraded, an event).
    for sample in ("image-model.yaml", "cpu.yaml"):
        cluster.kubectl("apply", "-n", namespace, "-f", str(MANIFESTS / "samples" / sample))
    try:
        wait_until("bem-baked Ready", lambda: _phase(cluster, namespace, "bem-baked") == "Ready",
                   timeout=120)
        wait_until("bem-cpu Degraded",
                   lambda: _phase(cluster, namespace, "bem-cpu") == "Degraded", timeout=60)
    except Exception:
        print(operator_log.read_text()[-8000:])
        raise
    for kind in ("deployment", "service", "poddisruptionbudget", "networkpolicy"):
        cluster.kubectl("get", kind, "bem-baked", "-n", namespace)
    events = cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    assert "bem-operator" in events, "the operator posted no event"
    text = operator_log.read_text()
    refused = [line for line in text.splitlines() if any(r in line for r in REFUSALS)]
    assert not refused, "the API server refused the operator:\n" + "\n".join(refused[:20])
