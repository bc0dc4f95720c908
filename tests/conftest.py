"""Shared fixtures: the local control plane (`cluster`, `namespace`), and the xdist schedule.

The fixtures live in devcluster/pytest_plugin.py so that a pytest run in a subprocess (the
teardown tests) can load them with `-p`.

Under pytest-xdist (`scripts/test.sh` runs two workers with `--dist loadgroup`), the cluster
tests run as two chains, each in order on one worker: the tests that start the machine's one
real node (the real-pod tier, devcluster's real-node tests) and the tests on control planes
with kwok nodes only (the session's `cluster`, devcluster's own). The other tests spread over
both workers. xdist's own grouping (the `xdist_group` mark renames the node id) does nothing
under this pytest, so the controller is told the chains instead: each worker writes the ids it
collected, with their chain, to a file the controller names, and the scheduler below makes each
chain one work unit.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from devcluster.pytest_plugin import (  # noqa: F401 - fixtures and hook, by name
    NEEDS_CLUSTER,
    cluster,
    namespace,
    pytest_collection_finish,
)

CLUSTER_IDS_ENV = "BEM_TEST_CLUSTER_IDS"


def chain(item: pytest.Item) -> str | None:
    """The chain of cluster tests the item belongs to, or None when it needs no cluster."""
    # tests/realpods/conftest.py marks its tests realpods before this runs (trylast below).
    if item.get_closest_marker("realpods") or item.get_closest_marker("realnode"):
        return "real-node"
    if item.get_closest_marker("e2e") or NEEDS_CLUSTER & set(getattr(item, "fixturenames", ())):
        return "control-plane"
    return None


def pytest_configure(config: pytest.Config) -> None:
    if (config.pluginmanager.hasplugin("xdist") and not os.environ.get("PYTEST_XDIST_WORKER")
            and config.getoption("dist", "no") == "loadgroup"):
        fd, path = tempfile.mkstemp(prefix="bem-cluster-tests-")
        os.close(fd)
        os.environ[CLUSTER_IDS_ENV] = path  # the workers inherit it


def pytest_unconfigure(config: pytest.Config) -> None:
    path = os.environ.get(CLUSTER_IDS_ENV)
    if path and not os.environ.get("PYTEST_XDIST_WORKER"):
        for f in (Path(path), *Path(path).parent.glob(f"{Path(path).name}.*")):
            f.unlink(missing_ok=True)


@pytest.hookimpl(trylast=True)  # after the hooks that add markers (tests/install, realpods)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    path, worker = os.environ.get(CLUSTER_IDS_ENV), os.environ.get("PYTEST_XDIST_WORKER")
    if path and worker:
        Path(f"{path}.{worker}").write_text("".join(
            f"{item.nodeid}\t{name}\n" for item in items if (name := chain(item))))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    if config.getoption("dist", "no") != "loadgroup" or not os.environ.get(CLUSTER_IDS_ENV):
        return None
    from xdist.scheduler import LoadGroupScheduling

    base = Path(os.environ[CLUSTER_IDS_ENV])

    class ClusterScheduling(LoadGroupScheduling):
        """Each test its own work unit, except each chain of cluster tests: one unit, in order."""

        _chains: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self._chains is None:
                self._chains = dict(line.split("\t") for f in base.parent.glob(f"{base.name}.*")
                                    for line in f.read_text().splitlines())
            return self._chains.get(nodeid, nodeid)

    return ClusterScheduling(config, log)
