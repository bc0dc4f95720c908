#!/usr/bin/env bash
# Runs the tests; with no arguments, every tier (what CI runs): unit, runtime HTTP against
# real server processes, Redis against a real redis-server, e2e against a real local control
# plane, and the real-pod tier (started and stopped by the tests themselves).
#   scripts/test.sh                                  everything (setup: scripts/setup.sh all)
#   scripts/test.sh -m "not e2e and not realpods"    the unit tiers: only .venv and redis
#                                                    are installed, nothing is built from Go
# Other pytest arguments pass through; the setup tier follows from what they select.
# Two pytest-xdist workers: the tests that share the local cluster run in order on one of
# them (xdist group "cluster", tests/conftest.py), the independent ones spread over both.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh unit
tier=all
if (( $# )); then
  tier="$(.venv/bin/python scripts/needs_cluster.py "$@")"
fi
if [[ "$tier" == all ]]; then
  bash scripts/setup.sh all
fi
.venv/bin/lint-imports
# The figures the cluster tiers measure (tests/realpods/support.py figure()), told again at
# the end: a passing test's own output is not shown.
export BEM_TEST_FIGURES="$PWD/.devcluster/test-figures.log"
mkdir -p .devcluster && : > "$BEM_TEST_FIGURES"
began=$SECONDS
rc=0
.venv/bin/python -m pytest -n "${BEM_TEST_WORKERS:-2}" --dist loadgroup --durations=20 "$@" || rc=$?
if [[ -s "$BEM_TEST_FIGURES" ]]; then
  echo "[test] figures measured by the tests:" >&2
  sed 's/^/  /' "$BEM_TEST_FIGURES" >&2
fi
echo "[test] pytest finished in $(( SECONDS - began ))s (exit $rc)" >&2
exit "$rc"
