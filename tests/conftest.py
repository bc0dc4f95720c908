"""Shared fixtures: the local control plane (`cluster`, `namespace`).

The implementation lives in devcluster/pytest_plugin.py so that a pytest run
in a subprocess (the teardown tests) can load it with `-p`.
"""

from devcluster.pytest_plugin import (  # noqa: F401 - fixtures and hook, by name
    cluster,
    namespace,
    pytest_collection_finish,
)
