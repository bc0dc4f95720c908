#!/usr/bin/env bash
# Installs everything the project needs on a fresh machine, idempotently:
# redis-server (runtime cache tests), the Python virtualenv with pinned
# dependencies, and the local control-plane binaries (built from Go modules,
# cached per version in the user's cache directory).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*" >&2; }

# Debian packages: redis-server (runtime cache tests) and the real node's pieces
# (containerd, runc, CNI plugins, buildah, debootstrap, iptables, gcc for the pause binary).
DEBS=(redis-server containerd runc containernetworking-plugins buildah debootstrap iptables
      gcc libc6-dev conntrack iproute2 socat nftables curl)
missing=()
for p in "${DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if (( ${#missing[@]} )); then
  log "Installing Debian packages: ${missing[*]}"
  if [[ $(id -u) -eq 0 ]]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The packages start system instances; the project runs its own on its own sockets and ports.
  for unit in redis-server containerd; do
    $SUDO systemctl disable --now "$unit" >/dev/null 2>&1 || true
  done
fi

PY="${PYTHON:-python3}"
if [[ ! -x .venv/bin/python ]]; then
  log "Creating .venv"
  "$PY" -m venv .venv
fi
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [[ ! -f "$stamp" ]]; then
  log "Installing the project and its pinned dependencies into .venv"
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e '.[dev]'
  rm -f .venv/.installed-* && touch "$stamp"
fi

log "Building (or reusing) the local control-plane binaries"
bindir="$(bash devcluster/build-binaries.sh)"
log "Control-plane binaries in $bindir"

log "Building (or reusing) KEDA, the Prometheus operator and Prometheus from Go modules (cluster add-ons)"
addons="$(bash devcluster/build-addons.sh)"
log "Add-on binaries in $addons"

# The project's images (operator, runtime, runtime with the toy model) and the add-ons'
# (Prometheus, its operator and config reloader, KEDA), built with buildah from a
# debootstrapped base; skipped when nothing they copy has changed.
log "Building (or reusing) the images"
.venv/bin/bem-devcluster images --no-import
