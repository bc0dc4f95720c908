"""e2e fixtures for the operator: the CRD installed, the operator as a subprocess.

The operator runs as `python -m bem_operator` with the credentials of the
`bem-operator` ServiceAccount from manifests/rbac.yaml, so a permission the
rules lack fails a test. Its log is printed when a test fails.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_support import (
    CRD,
    RBAC,
    RESYNC_SECONDS,
    Kube,
    OperatorProcess,
    eventually,
    install_crd,
)

OPERATOR_NAMESPACE = "bem-system"
OPERATOR_ACCOUNT = "bem-operator"


@pytest.fixture(scope="session")
def crd_installed(cluster: Any) -> None:
    install_crd(cluster, CRD)


@pytest.fixture(scope="session")
def operator_kubeconfig(cluster: Any, crd_installed: None) -> Path:
    """The operator's identity: the ServiceAccount of manifests/rbac.yaml (least privilege)."""
    if not RBAC.is_file():  # before the install path existed; never the case in CI
        return Path(cluster.kubeconfig)
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}}
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(namespace))
    eventually("the bem-system namespace", lambda: cluster.kubectl(
        "get", "namespace", OPERATOR_NAMESPACE, check=False).returncode == 0)
    cluster.kubectl("apply", "-f", str(RBAC))
    return Path(cluster.kubeconfig_for_service_account(OPERATOR_NAMESPACE, OPERATOR_ACCOUNT))


@pytest.fixture(scope="module")
def operator(operator_kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory,
             request: pytest.FixtureRequest) -> Iterator[OperatorProcess]:
    """One operator per test module (watching every namespace), stopped cleanly after it.
    A module sets OPERATOR_RESYNC_SECONDS to prove the watches work without the timer, and
    OPERATOR_ENV for settings of its own."""
    log_path = tmp_path_factory.mktemp("operator") / "operator.log"
    resync = getattr(request.module, "OPERATOR_RESYNC_SECONDS", RESYNC_SECONDS)
    proc = OperatorProcess(operator_kubeconfig, log_path, resync_seconds=resync,
                           extra_env=getattr(request.module, "OPERATOR_ENV", None))
    proc.start()
    try:
        yield proc
    finally:
        code = proc.stop()
        assert code in (0, None), \
            f"The operator exited with {code} on SIGTERM:\n{proc.log_text()[-8000:]}"


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def kube(cluster: Any, namespace: str, operator: OperatorProcess,
         request: pytest.FixtureRequest) -> Iterator[Kube]:
    """kubectl in the test's namespace; the operator's log of this test is shown on failure."""
    start = operator.log_size()
    yield Kube(cluster, namespace)
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        print(f"\n----- operator log during {request.node.name} -----\n"
              f"{operator.log_text(start)[-20000:]}")
