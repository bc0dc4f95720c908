"""Fixtures for the install-path tests.

helm comes from the local control plane's binary cache (scripts/setup.sh builds it); a
missing binary fails the test with the command to run, it never skips.
"""

from __future__ import annotations

import pytest

from devcluster import binaries

from .support import Helm


@pytest.fixture(scope="session")
def helm() -> Helm:
    return Helm(binaries.ensure(build_if_missing=False).helm)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that renders the chart needs helm, a binary built from Go modules: it belongs
    to the e2e tier, so `-m "not e2e and not realpods"` needs no Go build."""
    for item in items:
        if "helm" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.e2e)
