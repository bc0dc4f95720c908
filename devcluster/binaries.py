"""Locate (and build when missing) the control-plane binaries.

The versions live in one place: ``build-binaries.sh``. We ask it for the cache
folder with ``--print-dir`` and only run the (slow, cold: minutes) build when a
binary is missing there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

BUILD_SCRIPT = Path(__file__).with_name("build-binaries.sh")
# Keep in sync with WANT in build-binaries.sh.
BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kubelet",
    "kube-proxy",
    "kwok",
    "helm",
    "registry",
)


class BinariesMissing(RuntimeError):
    """The control-plane binaries are not built yet."""


@dataclass(frozen=True)
class Binaries:
    """Paths of the binaries of one versioned build."""

    bin_dir: Path

    def path(self, name: str) -> Path:
        if name not in BINARIES:
            raise KeyError(f"unknown binary {name!r}; known: {', '.join(BINARIES)}")
        return self.bin_dir / name

    def missing(self) -> list[str]:
        return [b for b in BINARIES if not (self.bin_dir / b).is_file()]

    @property
    def kubectl(self) -> Path:
        return self.path("kubectl")

    @property
    def helm(self) -> Path:
        return self.path("helm")


def cache_root() -> Path:
    """The user's cache folder of devcluster (binaries, node image store, image builds)."""
    env = os.environ.get("BEM_DEVCLUSTER_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "bem-devcluster"


def bin_dir() -> Path:
    """The versioned cache folder the build script uses (env overrides honoured)."""
    out = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--print-dir"],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(out.stdout.strip())


def build(*, quiet: bool = False) -> Binaries:
    """Run the build script (skips what is cached); its progress goes to stderr."""
    stderr = subprocess.DEVNULL if quiet else sys.stderr
    # nice: the build takes both cores for minutes on a shared machine.
    out = subprocess.run(
        ["nice", "-n", "10", "bash", str(BUILD_SCRIPT)],
        check=False,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(
            f"building the control-plane binaries failed (exit {out.returncode}); "
            f"rerun `bash {BUILD_SCRIPT}` to see the Go error"
        )
    lines = out.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError("build-binaries.sh printed no bin dir")
    found = Binaries(Path(lines[-1]))
    if found.missing():
        raise RuntimeError(f"build finished but {found.missing()} are missing in {found.bin_dir}")
    return found


def ensure(*, build_if_missing: bool = True) -> Binaries:
    """Return the binaries, building them first when any is missing."""
    found = Binaries(bin_dir())
    if not found.missing():
        return found
    if not build_if_missing:
        raise BinariesMissing(
            f"missing {', '.join(found.missing())} in {found.bin_dir}; "
            "run `bem-devcluster build` (10-25 minutes cold, seconds when cached)"
        )
    print(
        f"[devcluster] building {', '.join(found.missing())} into {found.bin_dir} "
        "(all of them: 10-25 minutes cold)",
        file=sys.stderr,
    )
    return build()


def ensure_registry() -> Path:
    """The local image registry's binary, built alone (a minute or two cold) when missing: the
    images can move while the rest of the binaries are still being built."""
    path = bin_dir() / "registry"
    if not path.is_file():
        out = subprocess.run(["nice", "-n", "10", "bash", str(BUILD_SCRIPT), "--registry"],
                             check=False, stdout=subprocess.PIPE, text=True)
        if out.returncode != 0 or not path.is_file():
            raise RuntimeError(f"building the registry failed (exit {out.returncode}); rerun "
                               f"`bash {BUILD_SCRIPT} --registry` to see the Go error")
    return path
