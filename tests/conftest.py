"""Shared fixtures: the local control plane (`cluster`, `namespace`).

The implementation lives in devcluster/pytest_plugin.py so that a pytest run
in a subprocess (the teardown tests) can load it with `-p`.
"""

from pathlib import Path

import pytest

from devcluster.pytest_plugin import (  # noqa: F401 - fixtures and hook, by name
    NEEDS_CLUSTER,
    cluster,
    namespace,
    pytest_collection_finish,
)

REALPODS = Path(__file__).parent / "realpods"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (`--dist loadgroup`, scripts/test.sh), the tests that use the local
    cluster, or start their own (one real node per machine), run in order on one worker; the
    others spread over the rest."""
    for item in items:
        if (item.get_closest_marker("e2e") or item.get_closest_marker("realpods")
                or REALPODS in Path(item.fspath).parents
                or NEEDS_CLUSTER & set(getattr(item, "fixturenames", ()))):
            item.add_marker(pytest.mark.xdist_group("cluster"))
