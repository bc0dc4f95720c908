"""The local image registry: how images move from buildah to the node's containerd by layer.

buildah pushes an image to a registry (distribution v3, built with the node's binaries by
build-binaries.sh) that listens on 127.0.0.1 only, and containerd pulls it from there. Both
sides skip the blobs the other end already holds, so a layer crosses once per machine: the
runtime image with the toy model costs its own layer only, and a change to the code moves the
code's layer, never the multi-GB dependency layer under it. The registry's storage lives in
the user's cache folder (it is the transfer medium, kept between runs); the process runs only
while images move.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from devcluster import binaries
from devcluster.binaries import cache_root
from devcluster.health import http_ok, wait_until
from devcluster.processes import Component, log_path, spawn, stop


# One fixed loopback port: buildah remembers which registry holds which layer by its address
# (its blob-info cache), so the same address on every run is what lets a push skip the layers
# an earlier run sent. The machine's one builder lock (images.ensure_all) keeps it to one user.
DEFAULT_PORT = 5055


def port() -> int:
    return int(os.environ.get("BEM_REGISTRY_PORT", DEFAULT_PORT))


def storage_dir() -> Path:
    return cache_root() / "registry"


def config(addr: str, storage: Path) -> str:
    """distribution's configuration: loopback only, local folder, no auth (nothing else can
    reach it), deletes allowed (an operator can drop a stale manifest by hand)."""
    return f"""version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: {addr}
"""


@contextlib.contextmanager
def serving() -> Iterator[str]:
    """Run the registry on its loopback port for the duration; yields `127.0.0.1:<port>`.

    One user at a time on a machine (a lock file): a second caller waits its turn."""
    binary = binaries.ensure_registry()
    state = storage_dir()
    (state / "data").mkdir(parents=True, exist_ok=True)
    addr = f"127.0.0.1:{port()}"
    conf = state / "config.yml"
    # The lock is the port's, wherever the storage is.
    with open(cache_root() / "registry.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        conf.write_text(config(addr, state / "data"))
        comp: Component = spawn("registry", [str(binary), "serve", str(conf)], state,
                                die_with_parent=True)
        try:
            wait_until(f"the image registry on {addr}", lambda: http_ok(f"http://{addr}/v2/"),
                       timeout=30, component=comp, log=log_path(state, "registry"))
            yield addr
        finally:
            stop(comp)


def pull_into_containerd(ctr, addr: str, name: str, cri_ref: str) -> None:
    """containerd fetches the image's missing blobs from the registry, unpacks them and names
    the image `cri_ref` (what a pod's `image:` resolves to); the registry's name goes again."""
    remote = f"{addr}/{name}"
    ctr("images", "pull", "--plain-http", remote, timeout=1800)
    ctr("images", "tag", "--force", remote, cri_ref)
    ctr("images", "rm", remote, check=False)


def push(buildah, source_ref: str, addr: str, name: str) -> subprocess.CompletedProcess[str]:
    """buildah sends the layers the registry lacks, uncompressed (loopback: compressing
    GBs on 2 cores costs more than it saves)."""
    return buildah("push", "-q", "--tls-verify=false", "--format", "oci",
                   "--disable-compression", source_ref, f"docker://{addr}/{name}")
