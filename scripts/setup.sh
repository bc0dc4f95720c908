#!/usr/bin/env bash
# Installs what the project needs on a fresh machine, idempotently, in tiers:
#   scripts/setup.sh unit   Debian's redis-server and the Python virtualenv with the pinned
#                           dependencies: enough for every test outside the e2e and realpods
#                           tiers (a few minutes on a fresh machine).
#   scripts/setup.sh        (or `all`) the above, plus the real node's Debian packages, the
#                           local control plane's binaries and the cluster add-ons, built from
#                           Go modules (cached per version under ~/.cache/bem-devcluster), and
#                           the images (buildah, pushed to the local registry).
# Each phase says what it does, how long it took and what comes next.
set -euo pipefail
cd "$(dirname "$0")/.."

TIER="${1:-all}"
case "$TIER" in
  unit|all) ;;
  *) echo "usage: scripts/setup.sh [unit|all]" >&2; exit 2 ;;
esac

SETUP_T0=$SECONDS
log() { printf '[setup %4ds] %s\n' "$(( SECONDS - SETUP_T0 ))" "$*" >&2; }
# phase NAME NEXT CMD...: runs CMD, then says how long NAME took and what comes next.
phase() {
  local name="$1" next="$2" began=$SECONDS
  shift 2
  "$@"
  log "$name: done in $(( SECONDS - began ))s${next:+; next: $next}"
}

# Debian packages: redis-server (runtime cache tests) and, for the cluster tiers, the real
# node's pieces (containerd, runc, CNI plugins, buildah, debootstrap, iptables, gcc for the
# pause binary, socat for the API server's bridge forwarder).
DEBS=(redis-server)
if [[ "$TIER" == all ]]; then
  DEBS+=(containerd runc containernetworking-plugins buildah debootstrap iptables
         gcc libc6-dev conntrack iproute2 socat nftables curl)
fi
install_debs() {
  local missing=() p
  for p in "${DEBS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  (( ${#missing[@]} )) || return 0
  log "Installing Debian packages: ${missing[*]}"
  local sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
  # The packages start system instances; the project runs its own on its own sockets and ports.
  for unit in redis-server containerd; do
    $sudo systemctl disable --now "$unit" >/dev/null 2>&1 || true
  done
}
phase "Debian packages" "the Python virtualenv" install_debs

install_venv() {
  local py="${PYTHON:-python3}" stamp
  if [[ ! -x .venv/bin/python ]]; then
    log "Creating .venv"
    "$py" -m venv .venv
  fi
  stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
  [[ ! -f "$stamp" ]] || return 0
  log "Installing the project and its pinned dependencies into .venv (torch with its CUDA wheels: a few minutes cold)"
  .venv/bin/pip install -q --upgrade pip >/dev/null
  # setuptools warns on every editable install of a package whose folder is mapped
  # (operator/bem_operator): a notice for its authors, not for whoever runs this.
  PYTHONWARNINGS="ignore:Editable installation" .venv/bin/pip install -q -e '.[dev]'
  rm -f .venv/.installed-* && touch "$stamp"
}
if [[ "$TIER" == unit ]]; then
  phase "Python virtualenv" "" install_venv
  log "unit tier ready in $(( SECONDS - SETUP_T0 ))s"
  exit 0
fi
phase "Python virtualenv" "the local image registry's binary" install_venv

# The project's images (operator, runtime, runtime with the toy model) need only the local
# registry's binary (a small Go build, first): they are built and pushed in the background while
# the other Go builds take the CPUs (debootstrap, wheel downloads and the 6 GB runtime image are
# mostly disk and network). The add-ons' images need the add-on binaries, so they follow.
registry_binary() { bash devcluster/build-binaries.sh --registry >/dev/null; }
phase "The local image registry's binary" "the images (in the background) and the Go builds" \
  registry_binary
log "Building (or reusing) the project images (buildah), beside the Go builds"
images_log="$(mktemp)"
# Its own process group (job control on for this one job), so that a failing setup stops the
# job's buildah processes too, not only its shell.
set -m
( began=$SECONDS
  .venv/bin/bem-devcluster images --no-import --only project
  echo "[images] project images: done in $(( SECONDS - began ))s" >&2 ) >"$images_log" 2>&1 &
images_pid=$!
set +m
trap 'kill -- -"$images_pid" 2>/dev/null || true' EXIT

control_plane() {
  local bindir
  bindir="$(bash devcluster/build-binaries.sh)"
  log "Control-plane binaries in $bindir"
}
phase "Control-plane binaries (etcd, Kubernetes, kwok, helm)" \
  "the add-ons (CoreDNS, metrics-server, KEDA, the Prometheus operator, Prometheus)" control_plane

addons() {
  local dir
  dir="$(bash devcluster/build-addons.sh)"
  log "Add-on binaries in $dir"
  log "NetworkPolicy analyser: $(bash devcluster/build-analyser.sh)"
  log "Gateway API CRDs: $(bash devcluster/fetch-gateway-api.sh)"
  log "The edge (Traefik): $(bash devcluster/build-edge.sh)"
}
phase "Add-on binaries" "waiting for the project images" addons

# Every image is built with buildah (from a debootstrapped base, or from scratch for a static
# binary) and skipped when nothing it copies has changed. The add-ons' (CoreDNS, metrics-server,
# Prometheus, its operator and config reloader, KEDA) wait for the project's: one builder at a
# time on a machine.
wait_images() {
  local rc=0
  wait "$images_pid" || rc=$?
  trap - EXIT
  cat "$images_log" >&2
  rm -f "$images_log"
  if (( rc != 0 )); then
    log "Building the project images failed (exit $rc): see the output above"
    exit "$rc"
  fi
}
phase "Waiting for the project images" "the add-ons' images" wait_images
phase "Add-ons' images" "" .venv/bin/bem-devcluster images --no-import --only addons
log "setup done in $(( SECONDS - SETUP_T0 ))s"
