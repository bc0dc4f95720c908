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
