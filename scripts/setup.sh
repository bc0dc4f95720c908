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

# The project's images (operator, runtime, runtime with the toy model) need no Go build: they
# are built in the background while the Go builds below take the CPUs (debootstrap, wheel
# downloads and the 6 GB runtime image are mostly disk and network; on a fresh machine this
# saves most of their 8 minutes). The add-ons' images need the add-on binaries, so they follow.
log "Building (or reusing) the project images (buildah), beside the Go builds"
images_log="$(mktemp)"
.venv/bin/bem-devcluster images --no-import --only project >"$images_log" 2>&1 &
images_pid=$!
trap 'kill "$images_pid" 2>/dev/null || true' EXIT

log "Building (or reusing) the local control-plane binaries"
bindir="$(bash devcluster/build-binaries.sh)"
log "Control-plane binaries in $bindir"

log "Building (or reusing) KEDA, the Prometheus operator and Prometheus from Go modules (cluster add-ons)"
addons="$(bash devcluster/build-addons.sh)"
log "Add-on binaries in $addons"

# Every image is built with buildah from a debootstrapped base and skipped when nothing it
# copies has changed. The add-ons' (Prometheus, its operator and config reloader, KEDA) wait
# for the project's: one builder at a time on a machine.
images_rc=0
wait "$images_pid" || images_rc=$?
trap - EXIT
cat "$images_log" >&2
rm -f "$images_log"
if (( images_rc != 0 )); then
  log "Building the project images failed (exit $images_rc): see the output above"
  exit "$images_rc"
fi
log "Building (or reusing) the add-ons' images"
.venv/bin/bem-devcluster images --no-import --only addons
