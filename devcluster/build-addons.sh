#!/usr/bin/env bash
# Builds the cluster add-ons from Go modules, once per version: CoreDNS and metrics-server
#   (the cluster DNS and resource metrics every cluster has), and for the autoscaling loop KEDA
#   (operator and metrics API server), the Prometheus operator (with its config reloader)
#   and Prometheus itself (Debian's package is built without Kubernetes service discovery, so
#   it cannot read a ServiceMonitor's scrape config). The modules carry replace directives in
#   their go.mod, so `go install mod@v` refuses them: each is built as the main module from a
#   writable copy of its downloaded module directory. CRDs and manifests are read from the same
#   copies (--sources makes only those).
set -euo pipefail

KEDA_VERSION="${KEDA_VERSION:-v2.20.2}"
PROMOP_VERSION="${PROMOP_VERSION:-v0.85.0}"
# Prometheus releases are published as Go module versions v0.<100*major+minor>.<patch>.
PROMETHEUS_VERSION="${PROMETHEUS_VERSION:-v3.5.0}"
COREDNS_VERSION="${COREDNS_VERSION:-v1.15.0}"
METRICS_SERVER_VERSION="${METRICS_SERVER_VERSION:-v0.8.0}"
PROMETHEUS_MODULE_VERSION="v0.$(( ${PROMETHEUS_VERSION:1:1} * 100 + 10#$(cut -d. -f2 <<<"${PROMETHEUS_VERSION}") )).$(cut -d. -f3 <<<"${PROMETHEUS_VERSION}")"
CACHE_ROOT="${BEM_DEVCLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bem-devcluster}"
BIN_DIR="$CACHE_ROOT/addons-keda-${KEDA_VERSION}-promop-${PROMOP_VERSION}-prom-${PROMETHEUS_VERSION}-coredns-${COREDNS_VERSION}-ms-${METRICS_SERVER_VERSION}"
SRC_DIR="$BIN_DIR/src"
# name:module:version:package, one per binary (devcluster/addons.py reads the names here).
WANT=(
  "coredns:github.com/coredns/coredns:${COREDNS_VERSION}:github.com/coredns/coredns"
  "metrics-server:sigs.k8s.io/metrics-server:${METRICS_SERVER_VERSION}:./cmd/metrics-server"
  "keda-operator:github.com/kedacore/keda/v2:${KEDA_VERSION}:./cmd/operator"
  "keda-adapter:github.com/kedacore/keda/v2:${KEDA_VERSION}:./cmd/adapter"
  "prometheus-operator:github.com/prometheus-operator/prometheus-operator:${PROMOP_VERSION}:./cmd/operator"
  "prometheus-config-reloader:github.com/prometheus-operator/prometheus-operator:${PROMOP_VERSION}:./cmd/prometheus-config-reloader"
  "prometheus:github.com/prometheus/prometheus:${PROMETHEUS_MODULE_VERSION}:./cmd/prometheus"
)

# Go reports every module it fetches ("go: downloading ..."): hundreds of lines on a fresh
# machine. They are left out; errors still show.
go() { command go "$@" 2> >(grep -v '^go: downloading' >&2); }

if [[ "${1:-}" == "--print-dir" ]]; then
  echo "$BIN_DIR"
  exit 0
fi

export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:-} -mod=mod"
mkdir -p "$BIN_DIR" "$SRC_DIR"
exec 9>"$BIN_DIR/.lock"
flock 9  # one build per machine at a time

# A writable copy of one module's source, made once: $SRC_DIR/<last path element>.
source_of() {
  local module="$1" version="$2" name dir
  name="$(basename "${module%/v2}")"
  if [[ ! -f "$SRC_DIR/$name/.complete" ]]; then
    dir="$(go mod download -json "${module}@${version}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
    rm -rf "$SRC_DIR/$name"
    cp -r "$dir" "$SRC_DIR/$name"
    chmod -R u+w "$SRC_DIR/$name"
    # Nested modules (prometheus-operator's pkg/apis/monitoring, pkg/client) are not in the
    # module's zip: their replace-by-directory goes, and the published version it requires
    # is used instead.
    (cd "$SRC_DIR/$name" && go mod edit -json | python3 -c '
import json, os, sys
for r in json.load(sys.stdin).get("Replace") or []:
    new = r["New"]["Path"]
    if new.startswith(".") and not os.path.isdir(new):
        print(r["Old"]["Path"])' | while read -r old; do go mod edit -dropreplace="$old"; done)
    touch "$SRC_DIR/$name/.complete"
  fi
  echo "$SRC_DIR/$name"
}

# Prometheus registers every service-discovery plugin it ships (the cloud providers' SDKs are
# most of its compile). Prometheus's own mechanism trims them: plugins.yml lists the ones to
# keep and `go generate -tags plugins ./plugins` rewrites plugins/plugins.go from it. The local
# Prometheus discovers targets through ServiceMonitors only, i.e. Kubernetes SD (file and http
# SD are always built in).
trim_prometheus_plugins() {
  local src="$1"
  [[ -f "$src/.plugins-trimmed" ]] && return 0
  printf -- '- github.com/prometheus/prometheus/discovery/kubernetes\n' > "$src/plugins.yml"
  (cd "$src" && go generate -tags plugins ./plugins)
  touch "$src/.plugins-trimmed"
}

# CoreDNS compiles in every plugin its plugin.cfg lists (the cloud DNS backends' SDKs are most
# of its compile); `go generate` rewrites the plugin registry from that file. The local cluster
# serves cluster.local from the API and answers NXDOMAIN for the rest: no forward plugin is
# built in, so no query can leave the machine whatever a Corefile says.
trim_coredns_plugins() {
  local src="$1"
  [[ -f "$src/.plugins-trimmed" ]] && return 0
  printf '%s\n' errors:errors health:health ready:ready cache:cache loadbalance:loadbalance \
    template:template kubernetes:kubernetes > "$src/plugin.cfg"
  (cd "$src" && go generate coredns.go)
  touch "$src/.plugins-trimmed"
}

# One `go build` per module: binaries of one module share most packages, and one invocation
# compiles and links them together. A binary comes out named after its package's directory.
declare -A pkgs_of ldflags_of renames_of names_of
modules=()
for entry in "${WANT[@]}"; do
  IFS=: read -r bin module version pkg <<<"$entry"
  src="$(source_of "$module" "$version")"
  # --sources: only the module copies (CRDs and manifests), no build.
  [[ -x "$BIN_DIR/$bin" || "${1:-}" == "--sources" ]] && continue
  [[ -n "${pkgs_of[$src]:-}" ]] || modules+=("$src")
  pkgs_of[$src]+=" $pkg"
  renames_of[$src]+=" $(basename "$pkg"):$bin"
  names_of[$src]+=" $bin"
  ldflags_of[$src]="-s -w"
  if [[ "$bin" == prometheus ]]; then
    trim_prometheus_plugins "$src"
    # Prometheus reports its version (build info) from this.
    ldflags_of[$src]+=" -X github.com/prometheus/common/version.Version=${PROMETHEUS_VERSION#v}"
  fi
  [[ "$bin" == coredns ]] && trim_coredns_plugins "$src"
done
for src in "${modules[@]}"; do
  began=$SECONDS
  read -r -a pkgs <<<"${pkgs_of[$src]}"
  echo "building${names_of[$src]} from $(basename "$src")" >&2
  out="$BIN_DIR/.out"
  rm -rf "$out" && mkdir -p "$out"
  (cd "$src" && go build -trimpath -ldflags "${ldflags_of[$src]}" -o "$out/" "${pkgs[@]}")
  for pair in ${renames_of[$src]}; do
    mv "$out/${pair%%:*}" "$BIN_DIR/${pair#*:}"
  done
  rm -rf "$out"
  echo "built${names_of[$src]} in $(( SECONDS - began ))s" >&2
done

echo "$BIN_DIR"
