"""Which setup tier a pytest selection needs: prints `all` when any selected test is in the
e2e or realpods tier (binaries built from Go modules, the real node, images), else `unit`.

It asks pytest itself: the arguments are collected as the run would collect them (paths,
-m, -k, the conftest hooks that add markers), nothing is run.
    .venv/bin/python scripts/needs_cluster.py [pytest args...]
"""

from __future__ import annotations

import contextlib
import io
import sys

import pytest

CLUSTER_TIERS = ("e2e", "realpods")


class _Probe:
    def __init__(self) -> None:
        self.tier = "unit"

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if any(item.get_closest_marker(m) for item in session.items for m in CLUSTER_TIERS):
            self.tier = "all"


def _without_xdist(args: list[str]) -> list[str]:
    """The arguments less pytest-xdist's (the probe collects in this one process)."""
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in ("-n", "--numprocesses", "--dist", "--maxprocesses"):
            skip = True
        elif not arg.startswith(("--numprocesses=", "--dist=", "--maxprocesses=")) \
                and not (arg.startswith("-n") and len(arg) > 2):
            kept.append(arg)
    return kept


def main(args: list[str]) -> int:
    probe = _Probe()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = pytest.main(["--collect-only", "-q", "-p", "no:xdist", *_without_xdist(args)],
                         plugins=[probe])
    if rc not in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        sys.stderr.write(out.getvalue()[-4000:])
        return int(rc)
    print(probe.tier)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
