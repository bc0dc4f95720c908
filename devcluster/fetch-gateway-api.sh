#!/usr/bin/env bash
# Gateway API's standard CRDs (HTTPRoute, Gateway, GatewayClass, ...) from the Go module
# sigs.k8s.io/gateway-api, copied once per version into the cache; prints their directory.
# Only the CRDs: no binary is built (a Gateway implementation is another add-on's job).
# --print-dir: the directory, without fetching.
set -euo pipefail

GATEWAY_API_VERSION="${GATEWAY_API_VERSION:-v1.6.3}"
source "$(dirname "${BASH_SOURCE[0]}")/cache.sh"
DIR="$CACHE_ROOT/gateway-api-${GATEWAY_API_VERSION}"

if [[ "${1:-}" == "--print-dir" || -f "$DIR/.complete" ]]; then
  echo "$DIR"
  exit 0
fi
hold_lock "$CACHE_ROOT/.gateway-api.lock"
if [[ ! -f "$DIR/.complete" ]]; then
  src="$(module_dir "sigs.k8s.io/gateway-api@${GATEWAY_API_VERSION}")"
  rm -rf "$DIR"
  mkdir -p "$DIR"
  cp "$src"/config/crd/standard/*.yaml "$DIR/"
  chmod -R u+w "$DIR"
  touch "$DIR/.complete"
fi
echo "$DIR"
