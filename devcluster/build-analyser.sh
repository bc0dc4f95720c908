#!/usr/bin/env bash
# Builds cyclonus, a NetworkPolicy analyser, from its Go module, once per version; prints the
# binary's path. No NetworkPolicy implementation runs on the local node (its kernel lacks
# nftables' queue expression, which kube-network-policies needs, and the only kube-router the
# module proxy serves, v2.1.0, has reported security flaws), so the policies the operator and
# the chart write are checked by this analyser instead (tests/install/test_network_policy_analysis.py).
# The module has no replace directives: `go install mod@version` builds it as published.
set -euo pipefail

CYCLONUS_VERSION="${CYCLONUS_VERSION:-v0.5.6}"
CACHE_ROOT="${BEM_DEVCLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bem-devcluster}"
BIN_DIR="$CACHE_ROOT/analyser-cyclonus-${CYCLONUS_VERSION}"

if [[ "${1:-}" == "--print-dir" ]]; then
  echo "$BIN_DIR"
  exit 0
fi

mkdir -p "$BIN_DIR"
exec 9>"$BIN_DIR/.lock"
flock 9  # one build per machine at a time
if [[ ! -x "$BIN_DIR/cyclonus" ]]; then
  began=$SECONDS
  echo "building cyclonus ${CYCLONUS_VERSION}" >&2
  # Go reports every module it fetches; those lines are left out, errors still show.
  CGO_ENABLED=0 GOBIN="$BIN_DIR" nice -n 19 go install -trimpath -ldflags "-s -w" \
    "github.com/mattfenwick/cyclonus/cmd/cyclonus@${CYCLONUS_VERSION}" \
    2> >(grep -v '^go: downloading' >&2)
  echo "built cyclonus in $(( SECONDS - began ))s" >&2
fi
echo "$BIN_DIR/cyclonus"
