# Sourced by the small add-on scripts (build-analyser.sh, fetch-gateway-api.sh, build-edge.sh):
# where the project caches what it builds, and the helpers they share.
CACHE_ROOT="${BEM_DEVCLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bem-devcluster}"

# Go reports every module it fetches (hundreds of lines on a fresh machine): those lines are
# left out; errors still show.
go() { command go "$@" 2> >(grep -v '^go: downloading' >&2); }

# The builds after this run at the lowest priority (a shell function cannot go through `nice`).
lower_priority() { renice -n 19 -p $$ >/dev/null; }

# The directory of a module version, downloaded once into the Go module cache.
module_dir() {
  GOFLAGS="${GOFLAGS:-} -mod=mod" go mod download -json "$1" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])'
}

# Holds the lock file $1 (its directory made if missing) until the script ends: one build or
# fetch per machine at a time.
hold_lock() {
  mkdir -p "$(dirname "$1")"
  exec 9>"$1"
  flock 9
}
