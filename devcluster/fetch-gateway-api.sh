#!/usr/bin/env bash
# Gateway API's standard CRDs (HTTPRoute, Gateway, GatewayClass, ...) from the Go module
# sigs.k8s.io/gateway-api, copied once per version into the cache; prints their directory.
# Only the CRDs: no binary is built (a Gateway implementation is another add-on's job).
# --print-dir: the directory, without fetching.
set -euo pipefail

GATEWAY_API_VERSION="${GATEWAY_API_VERSION:-v1.6.3}"
CACHE_ROOT="${BEM_DEVCLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bem-devcluster}"
DIR="$CACHE_ROOT/gateway-api-${GATEWAY_API_VERSION}"

if [[ "${1:-}" == "--print-dir" || -f "$DIR/.complete" ]]; then
  echo "$DIR"
  exit 0
fi
mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/.gateway-api.lock"
flock 9  # one fetch per machine at a time
if [[ ! -f "$DIR/.complete" ]]; then
  src="$(GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/gateway-api@${GATEWAY_API_VERSION}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
  rm -rf "$DIR"
  mkdir -p "$DIR"
  cp "$src"/config/crd/standard/*.yaml "$DIR/"
  chmod -R u+w "$DIR"
  touch "$DIR/.complete"
fi
echo "$DIR"
