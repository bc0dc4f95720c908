#!/usr/bin/env bash
# Builds the local control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, kwok, helm) and the real node's kubelet and kube-proxy
# from Go modules, once per version.
# k8s.io/kubernetes cannot be `go install`ed: its go.mod points the staging
# modules at ./staging. A wrapper module replaces each by its published v0.Y.Z.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.34.4}"
KWOK_VERSION="${KWOK_VERSION:-v0.7.0}"
HELM_VERSION="${HELM_VERSION:-v3.19.5}"
# The local image registry the node's containerd pulls from (devcluster/registry.py).
DISTRIBUTION_VERSION="${DISTRIBUTION_VERSION:-v3.1.2}"
CACHE_ROOT="${BEM_DEVCLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bem-devcluster}"
BIN_DIR="$CACHE_ROOT/bin-k8s-${K8S_VERSION}-kwok-${KWOK_VERSION}-helm-${HELM_VERSION}"
# Keep in sync with devcluster/binaries.py (BINARIES).
WANT=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy kwok helm
      registry)

# Go reports every module it fetches ("go: downloading ..."): hundreds of lines on a fresh
# machine. They are left out; errors still show.
go() { command go "$@" 2> >(grep -v '^go: downloading' >&2); }

all_present() {
  for b in "${WANT[@]}"; do [[ -x "$BIN_DIR/$b" ]] || return 1; done
  [[ "$(cat "$BIN_DIR/.registry-version" 2>/dev/null)" == "$DISTRIBUTION_VERSION" ]]
}

# --print-dir: say where the binaries live (the single source of the versions),
# without building; the Python side uses it to find or build them.
if [[ "${1:-}" == "--print-dir" ]]; then
  echo "$BIN_DIR"
  exit 0
fi

if all_present; then
  echo "$BIN_DIR"
  exit 0
fi

mkdir -p "$BIN_DIR"
# One build per machine at a time: a second caller (the images built in the background by
# setup.sh, a test session) waits, then finds the binaries there.
exec 9>"$BIN_DIR/.lock"
flock 9
export GOFLAGS="${GOFLAGS:-} -mod=mod"
export CGO_ENABLED=0

# The registry the images reach the node through: distribution's own server with the filesystem
# storage driver only. Its cmd/registry also links the Azure, GCS and S3 drivers (their SDKs are
# most of its compile); this main registers what a registry on loopback with a local folder
# needs, nothing else.
build_registry() {
  [[ "$(cat "$BIN_DIR/.registry-version" 2>/dev/null)" != "$DISTRIBUTION_VERSION" ]] || return 0
  local began=$SECONDS work
  echo "building registry (distribution ${DISTRIBUTION_VERSION}, filesystem storage only)" >&2
  work="$CACHE_ROOT/build-registry-${DISTRIBUTION_VERSION}"
  rm -rf "$work" && mkdir -p "$work"
  cat > "$work/go.mod" <<MOD
module bemdevcluster/registry

go 1.24.0

require github.com/distribution/distribution/v3 ${DISTRIBUTION_VERSION}
MOD
  cat > "$work/main.go" <<'GO'
package main

import (
	"github.com/distribution/distribution/v3/registry"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
)

func main() {
	if err := registry.RootCmd.Execute(); err != nil {
		panic(err)
	}
}
GO
  (cd "$work"
   go mod tidy >/dev/null 2>&1 || go mod tidy
   go build -trimpath -ldflags "-s -w" -o "$BIN_DIR/registry.tmp" .)
  mv "$BIN_DIR/registry.tmp" "$BIN_DIR/registry"
  echo "$DISTRIBUTION_VERSION" > "$BIN_DIR/.registry-version"
  echo "built registry in $(( SECONDS - began ))s" >&2
}

# The registry first, and alone with --registry: the images built in the background by
# setup.sh push to it while the Kubernetes build below takes minutes.
build_registry
if [[ "${1:-}" == "--registry" ]]; then
  echo "$BIN_DIR"
  exit 0
fi

WORK="$CACHE_ROOT/build-k8s-${K8S_VERSION}"
mkdir -p "$WORK"

minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
staging_version="v0.${K8S_VERSION#v1.}"

(
  cd "$WORK"
  modfile="$(go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  {
    echo "module bemdevcluster/k8sbuild"
    echo
    echo "go 1.24.0"
    echo
    echo "require k8s.io/kubernetes ${K8S_VERSION}"
    echo
    echo "replace ("
    grep -E '^\s*k8s.io/[a-z0-9-]+ => ./staging/' "$modfile" \
      | awk -v v="$staging_version" '{print "\t" $1 " => " $1 " " v}'
    echo ")"
  } > go.mod
  cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
)
GO
  go mod tidy >/dev/null 2>&1 || go mod tidy
  ldflags="-s -w"
  for kv in "gitVersion=${K8S_VERSION}" "gitMajor=1" "gitMinor=${minor}" \
            "gitTreeState=clean" "buildDate=1970-01-01T00:00:00Z"; do
    ldflags+=" -X k8s.io/component-base/version.${kv} -X k8s.io/client-go/pkg/version.${kv}"
  done
  # One `go build` for the seven binaries: they share most packages (client-go, apimachinery,
  # component-base), and one invocation schedules their compiles and links together on the
  # machine's cores instead of leaving a core idle during each link. A binary is named after
  # its package's last path element (etcd's `go.etcd.io/etcd/server/v3` -> `server`).
  pkgs=()
  for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy; do
    [[ -x "$BIN_DIR/$cmd" ]] || pkgs+=("k8s.io/kubernetes/cmd/$cmd")
  done
  [[ -x "$BIN_DIR/etcd" ]] || pkgs+=("go.etcd.io/etcd/server/v3")
  if (( ${#pkgs[@]} )); then
    began=$SECONDS
    echo "building ${#pkgs[@]} binaries of Kubernetes ${K8S_VERSION} and etcd in one go build (cold: 10-20 min on 2 cores)" >&2
    out="$BIN_DIR/.out"
    rm -rf "$out" && mkdir -p "$out"
    go build -trimpath -ldflags "$ldflags" -o "$out/" "${pkgs[@]}"
    for n in server v3; do [[ ! -x "$out/$n" ]] || mv "$out/$n" "$out/etcd"; done
    mv "$out"/* "$BIN_DIR/"
    rmdir "$out"
    echo "built Kubernetes ${K8S_VERSION} and etcd in $(( SECONDS - began ))s" >&2
  fi
)

if [[ ! -x "$BIN_DIR/kwok" ]]; then
  began=$SECONDS
  echo "building kwok ${KWOK_VERSION}" >&2
  GOBIN="$BIN_DIR" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@${KWOK_VERSION}"
  echo "built kwok in $(( SECONDS - began ))s" >&2
fi
if [[ ! -x "$BIN_DIR/helm" ]]; then
  began=$SECONDS
  echo "building helm ${HELM_VERSION}" >&2
  # helm's offline default Kubernetes version (helm template/lint) is v1.20 unless set:
  # charts that require a recent kubeVersion would fail to render without a cluster.
  helm_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
  for pkg in pkg/chartutil pkg/lint/rules; do
    helm_ldflags+=" -X helm.sh/helm/v3/${pkg}.k8sVersionMajor=1 -X helm.sh/helm/v3/${pkg}.k8sVersionMinor=${minor}"
  done
  GOBIN="$BIN_DIR" go install -trimpath -ldflags "$helm_ldflags" "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
  echo "built helm in $(( SECONDS - began ))s" >&2
fi

all_present
echo "$BIN_DIR"
