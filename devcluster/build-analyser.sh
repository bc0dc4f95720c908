#!/usr/bin/env bash
# Builds cyclonus, a NetworkPolicy analyser, from its Go module, once per version; prints the
# binary's path. No NetworkPolicy implementation runs on the local node (its kernel lacks
# nftables' queue expression, which kube-network-policies needs, and the only kube-router the
# module proxy serves, v2.1.0, has reported security flaws), so the policies the operator and
# the chart write are checked by this analyser instead (tests/install/test_network_policy_analysis.py).
# The module has no replace directives: `go install mod@version` builds it as published.
set -euo pipefail

CYCLONUS_VERSION="${CYCLONUS_VERSION:-v0.5.6}"
source "$(dirname "${BASH_SOURCE[0]}")/cache.sh"
BIN_DIR="$CACHE_ROOT/analyser-cyclonus-${CYCLONUS_VERSION}"

if [[ "${1:-}" == "--print-dir" ]]; then
  echo "$BIN_DIR"
  exit 0
fi

hold_lock "$BIN_DIR/.lock"
if [[ ! -x "$BIN_DIR/cyclonus" ]]; then
  began=$SECONDS
  echo "building cyclonus ${CYCLONUS_VERSION}" >&2
  lower_priority
  CGO_ENABLED=0 GOBIN="$BIN_DIR" go install -trimpath -ldflags "-s -w" \
    "github.com/mattfenwick/cyclonus/cmd/cyclonus@${CYCLONUS_VERSION}"
  echo "built cyclonus in $(( SECONDS - began ))s" >&2
fi
echo "$BIN_DIR/cyclonus"
