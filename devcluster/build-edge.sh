#!/usr/bin/env bash
# Builds Traefik, the local cluster's Gateway API implementation (the edge: HTTPS, the
# redirect from HTTP, per-client rate limits), from its Go module, once per version; prints
# the directory that holds the binary `traefik` and Traefik's own CRDs (crds/, the traefik.io
# kinds its kubernetescrd provider watches: a BEMService's rate limit is a Middleware).
#
# The module does not build as published from the module proxy, for three reasons, each
# mended here in a writable copy of it:
# - its go.mod replaces github.com/traefik/traefik/dynamic/ext by a directory that is a nested
#   module, so the module zip lacks it. It is the dynamic configuration's extension point,
#   empty types in the open-source build, and is written here as such.
# - its ACME client, lego, registers every DNS provider it has, and the module proxy refuses
#   the SDKs of seven of them. lego's provider registry is emptied in a copy of lego (the local
#   edge serves a certificate from a Secret and never asks an ACME server for one).
# - it pins a fork of go-http-auth (its basic and digest auth middlewares) at a version the
#   proxy refuses; the fork's previous version has the same API. The local edge configures
#   neither middleware.
# --print-dir: the directory, without building.
set -euo pipefail

TRAEFIK_VERSION="${TRAEFIK_VERSION:-v3.7.13}"
AUTH_FORK="github.com/containous/go-http-auth@v0.4.1-0.20200324110947-a37a7636d23e"
source "$(dirname "${BASH_SOURCE[0]}")/cache.sh"
DIR="$CACHE_ROOT/edge-traefik-${TRAEFIK_VERSION}"
SRC="$DIR/src"

if [[ "${1:-}" == "--print-dir" || -x "$DIR/traefik" ]]; then
  echo "$DIR"
  exit 0
fi

hold_lock "$DIR/.lock"
if [[ ! -x "$DIR/traefik" ]]; then
  began=$SECONDS
  echo "building traefik ${TRAEFIK_VERSION}" >&2
  export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=mod"
  rm -rf "$SRC" && mkdir -p "$SRC"
  cp -r "$(module_dir "github.com/traefik/traefik/v3@${TRAEFIK_VERSION}")" "$SRC/traefik"
  chmod -R u+w "$SRC/traefik"
  cd "$SRC/traefik"

  ext=pkg/config/dynamic/ext
  mkdir -p "$ext"
  printf 'module github.com/traefik/traefik/dynamic/ext\n\ngo 1.24.0\n' > "$ext/go.mod"
  cat > "$ext/ext.go" <<'EOF'
// Package ext is where a distribution extends Traefik's dynamic configuration; the
// open-source build extends nothing.
package ext

// HTTP is inlined into dynamic.HTTP.
type HTTP struct{}

// Router is inlined into dynamic.Router.
type Router struct{}
EOF

  lego_version="$(go list -m -f '{{.Version}}' github.com/go-acme/lego/v5)"
  cp -r "$(module_dir "github.com/go-acme/lego/v5@${lego_version}")" "$SRC/lego"
  chmod -R u+w "$SRC/lego"
  rm -f "$SRC"/lego/providers/dns/*.go
  cat > "$SRC/lego/providers/dns/dns_providers.go" <<'EOF'
// Package dns would map a DNS provider's name to lego's client of it; this build has none.
package dns

import (
	"fmt"

	"github.com/go-acme/lego/v5/challenge"
)

// NewDNSChallengeProviderByName refuses every name: no DNS provider is built in.
func NewDNSChallengeProviderByName(name string) (challenge.Provider, error) {
	return nil, fmt.Errorf("unrecognized DNS provider: %s (this build has none)", name)
}
EOF
  go mod edit -replace "github.com/go-acme/lego/v5=$SRC/lego" \
    -replace "github.com/abbot/go-http-auth=${AUTH_FORK}"

  lower_priority
  go build -trimpath \
    -ldflags "-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=${TRAEFIK_VERSION}" \
    -o "$DIR/.traefik" ./cmd/traefik
  rm -rf "$DIR/crds" && mkdir -p "$DIR/crds"
  cp docs/content/reference/dynamic-configuration/traefik.io_*.yaml "$DIR/crds/"
  mv "$DIR/.traefik" "$DIR/traefik"
  cd "$DIR" && rm -rf "$SRC"
  echo "built traefik in $(( SECONDS - began ))s" >&2
fi
echo "$DIR"
