#!/usr/bin/env bash
# Installs everything the project needs on a fresh machine, idempotently:
# redis-server (runtime cache tests), the Python virtualenv with pinned
# dependencies, and the local control-plane binaries (built from Go modules,
# cached per version in the user's cache directory).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*" >&2; }

if ! command -v redis-server >/dev/null 2>&1; then
  log "Installing redis-server from Debian packages"
  if [[ $(id -u) -eq 0 ]]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
  # The package starts a system instance; the tests start their own on free ports.
  $SUDO systemctl disable --now redis-server >/dev/null 2>&1 || true
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
