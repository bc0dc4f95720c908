"""The real-pod tier: a cluster with a real kubelet node, the project's images built and
imported, and the operator installed by Helm as a pod.

One real node per machine, so the cluster is shared by this package and torn down when
its last test ends (before any later package could need the machine's node again).
The images are built by `scripts/setup.sh` (`bem-devcluster images --no-import`); here
they are only checked and imported, which is quick once done on this machine.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devcluster import binaries, images, realnode
from devcluster.cluster import DevCluster
from devcluster.pytest_plugin import fresh_namespace
from install.support import CHART

OPERATOR_NS = "bem-system"


@pytest.fixture(scope="package")
def real_cluster() -> Iterator[DevCluster]:
    cluster = DevCluster.start(bins=binaries.ensure(), real_node=True)
    try:
        report = images.ensure_all(realnode.NodeLayout(cluster.state_dir))
        for ref, row in report.items():
            print(f"[realpods] image {ref}: {row['bytes'] / 2**20:.0f} MiB, "
                  f"{row['seconds']}s (built={row['built']}, imported={row['imported']})",
                  file=sys.stderr)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="package")
def helm_env(real_cluster: DevCluster, tmp_path_factory: pytest.TempPathFactory) -> dict:
    home = tmp_path_factory.mktemp("helm")
    return {**real_cluster.env(), **{f"HELM_{k}_HOME": str(home / k.lower())
                                     for k in ("CACHE", "CONFIG", "DATA")}}


@pytest.fixture(scope="package")
def operator_release(real_cluster: DevCluster, helm_env: dict) -> str:
    """`helm install` of the chart with the locally built operator image."""
    out = subprocess.run(
        [str(real_cluster.helm_bin), "install", "bem-operator", str(CHART), "-n", OPERATOR_NS,
         "--create-namespace", "--wait", "--timeout", "4m",
         "--set", "operator.resyncSeconds=5"],
        capture_output=True, text=True, env=helm_env, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return "bem-operator"


@pytest.fixture
def real_ns(real_cluster: DevCluster) -> Iterator[str]:
    with fresh_namespace(real_cluster, "r") as name:
        yield name


# pytest-timeout counts fixture setup in the first test that needs it. On a cold machine that
# setup is the node, the image imports (the two runtime images, 5.8 GB each, took 277 s and
# 190 s) and the add-ons: past the default 600 s, which failed a cold CI run.
SETUP_BOUND_TIMEOUT = 1500


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.realpods)
            item.add_marker(pytest.mark.timeout(SETUP_BOUND_TIMEOUT))
