"""Uninstall cannot hang: the operator puts no finalizer on a BEMService (its periodic check
is no kopf timer), so with the operator stopped a BEMService, a namespace holding one and
then the CRD itself can all be deleted."""
from __future__ import annotations

import secrets
import time
from typing import Any

import pytest
from operator_support import (
    CRD,
    RESYNC_SECONDS,
    Kube,
    OperatorProcess,
    bemservice,
    install_crd,
    wait_ready,
)

pytestmark = pytest.mark.e2e
CRD_NAME = "bemservices.bem.ai"


def test_deleting_with_the_operator_stopped_completes(cluster: Any, namespace: str,
                                                      operator: OperatorProcess) -> None:
    spare = f"t-{secrets.token_hex(4)}"
    cluster.kubectl("create", "namespace", spare)
    kube, other = Kube(cluster, namespace), Kube(cluster, spare)
    try:
        kube.apply(bemservice("alpha", replicas=1))
        kube.apply(bemservice("beta", replicas=1))
        other.apply(bemservice("gamma", replicas=1))
        for k, name in ((kube, "alpha"), (kube, "beta"), (other, "gamma")):
            wait_ready(k, name)
        time.sleep(3 * RESYNC_SECONDS)  # several periodic checks (a kopf timer added a finalizer)
        for k, name in ((kube, "alpha"), (kube, "beta"), (other, "gamma")):
            assert not k.get("bemservices", name)["metadata"].get("finalizers"), name

        assert operator.stop() == 0
        kube.kubectl("delete", "bemservices", "alpha", "--timeout=30s")
        assert kube.get("bemservices", "alpha") is None
        # The spare namespace holds gamma and its children: its deletion must finish.
        cluster.kubectl("delete", "namespace", spare, "--timeout=90s")
        # beta still exists: deleting the CRD deletes it, with no operator to wait for.
        cluster.kubectl("delete", "crd", CRD_NAME, "--timeout=60s")
        assert cluster.kubectl("get", "crd", CRD_NAME, check=False).returncode != 0
    finally:
        cluster.kubectl("delete", "namespace", spare, "--wait=false", check=False)
        # Later test modules share this cluster and its CRD.
        install_crd(cluster, CRD)
