#!/usr/bin/env bash
# Runs the whole test suite: unit tests, runtime HTTP tests against real server
# processes, Redis tests against a real redis-server, and the e2e tier against a
# real local control plane (started and stopped by the tests themselves).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/lint-imports
exec .venv/bin/python -m pytest "$@"
