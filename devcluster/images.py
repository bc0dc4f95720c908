"""Container images for the real node: built here with buildah, moved by layer to containerd.

Nothing is pulled from outside: the base is a Debian bookworm root made with debootstrap from
the machine's own apt mirror; the pause image is the Kubernetes pause.c compiled statically;
the project images are `buildah bud` of the project's own Dockerfiles with `BASE_IMAGE` set
to that base and the wheels downloaded on the host put into a staged build context
(`OFFLINE=1`: no network inside a build).

Caching, so an unchanged tree rebuilds and moves nothing:
- each image is keyed by the content of what its build copies (wheels by name and size,
  other files by content; the README is a stub, tests are not copied) plus its build
  arguments and base image id; a build whose key is recorded and whose image is still in
  buildah's storage is skipped;
- buildah's own layer cache keeps the multi-GB dependency layer across code changes;
- images reach the node through the local registry (registry.py): buildah pushes the layers
  it lacks, containerd pulls the layers it lacks, so a code change moves one small layer;
- the containerd image store lives in the user's cache folder (realnode.node_dir()).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from devcluster import registry
from devcluster.binaries import cache_root

REPO = Path(__file__).resolve().parent.parent
SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv")
BASE_REF = "localhost/bem/debian-python3:bookworm"
PAUSE_REF = "registry.k8s.io/pause:3.10"
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"] \
    if (REPO / "pyproject.toml").is_file() else "0.1.0"
# Build-time tools only: setuptools builds the project wheel inside the image build.
BUILD_WHEELS = ("setuptools>=77", "wheel")
CONTEXT_TREES = ("operator", "bem_runtime", "devcluster")
CONTEXT_FILES = ("pyproject.toml",)
# pyproject.toml names README.md as the package's long description; the image gets this line
# instead, so that an edit to the docs neither rebuilds an image nor moves a layer.
README_STUB = "BEM operator and runtime: see the project's README.\n"


@dataclass(frozen=True)
class Image:
    """One image: its Dockerfile, the pyproject extra it installs, its name and tag."""

    name: str
    dockerfile: str
    extra: str | None
    build_args: tuple[tuple[str, str], ...] = ()
    tag: str = VERSION
    # What the build context holds besides the Dockerfile and the extra's files: context
    # path -> host file, asked for when the context is staged (binaries of the add-ons).
    payload: Callable[[], dict[str, Path]] | None = None

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.tag}"

    @property
    def from_scratch(self) -> bool:
        """Whether the Dockerfile builds on nothing (a static binary's): no Debian base."""
        return re.search(r"^FROM (?!scratch\b)", (REPO / self.dockerfile).read_text(),
                         re.MULTILINE) is None

    @property
    def cri_ref(self) -> str:
        """The name a pod's `image: <name>:<tag>` resolves to."""
        return f"docker.io/library/{self.ref}"


OPERATOR = Image("bem-operator", "Dockerfile.operator", "operator")
RUNTIME = Image("bem-runtime", "Dockerfile.runtime", "runtime")
RUNTIME_WITH_MODEL = Image("bem-runtime-with-model", "docker/toy-model.Dockerfile", None,
                           (("RUNTIME_IMAGE", f"localhost/bem-runtime:{VERSION}"),))
ALL = (OPERATOR, RUNTIME, RUNTIME_WITH_MODEL)


def log(msg: str) -> None:
    print(f"[images] {msg}", file=sys.stderr, flush=True)


def images_dir() -> Path:
    return cache_root() / "images"


def buildah(*args: str, check: bool = True, capture: bool = True,
            timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    root = cache_root() / "buildah"
    argv = ["buildah", "--root", str(root / "root"), "--runroot", str(root / "runroot"),
            "--storage-driver", "overlay", *args]
    out = subprocess.run(argv, capture_output=capture, text=True, timeout=timeout,
                         env={**os.environ, "BUILDAH_ISOLATION": "chroot"})
    if check and out.returncode != 0:
        detail = (out.stderr or "")[-3000:] if capture else ""
        raise RuntimeError(f"buildah {' '.join(args[:3])} failed ({out.returncode}): {detail}")
    return out


def image_id(ref: str) -> str | None:
    out = buildah("images", "--noheading", "--no-trunc", "--format", "{{.ID}}", ref,
                  check=False)
    ids = out.stdout.split()
    return ids[0] if out.returncode == 0 and ids else None


def image_size(ref: str) -> int:
    out = buildah("inspect", "--type", "image", ref, check=False)
    if out.returncode != 0:
        return 0
    manifest = json.loads(json.loads(out.stdout)["Manifest"])
    return sum(layer.get("size", 0) for layer in manifest.get("layers", []))


# ---- the Debian base ------------------------------------------------------------------
def apt_mirror() -> str:
    """The Debian mirror this machine's apt sources name (deb822 or one-line format)."""
    sources = sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    for path in sources:
        for line in path.read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
    for path in [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*.list")]:
        if path.is_file():
            for line in path.read_text().splitlines():
                parts = line.split()
                if parts[:1] == ["deb"] and "security" not in line:
                    return next(p for p in parts[1:] if "://" in p)
    raise RuntimeError("no Debian mirror in /etc/apt/sources.list{,.d}: debootstrap needs one")


def ensure_base() -> str:
    """The Debian + python3 base image (debootstrap once per machine); returns its ref."""
    if image_id(BASE_REF):
        return BASE_REF
    rootfs = images_dir() / f"rootfs-{SUITE}"
    if not (rootfs / "usr" / "bin" / "python3").exists():
        began = time.monotonic()
        shutil.rmtree(rootfs, ignore_errors=True)
        tmp = rootfs.with_name(rootfs.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        log(f"debootstrap {SUITE} (minbase + {', '.join(BASE_PACKAGES)})")
        out = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
             SUITE, str(tmp), apt_mirror()], capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"debootstrap failed: {out.stdout[-2000:]}{out.stderr[-2000:]}")
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for f in (tmp / junk).glob("*"):
                if f.is_file():
                    f.unlink()
        tmp.rename(rootfs)
        log(f"debootstrap done in {time.monotonic() - began:.0f}s")
    container = buildah("from", "scratch").stdout.strip()
    try:
        buildah("copy", container, str(rootfs), "/")
        buildah("config", "--env",
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--cmd", "/bin/bash", container)
        buildah("commit", "-q", container, BASE_REF)
    finally:
        buildah("rm", container, check=False)
    return BASE_REF


# ---- wheels and the staged build context -------------------------------------------------
def requirements(extra: str) -> list[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *project["optional-dependencies"][extra]]


def wheels(extra: str) -> Path:
    """Wheels of the extra's pinned dependencies, downloaded on the host once per lock."""
    reqs = [*requirements(extra), *BUILD_WHEELS]
    key = hashlib.sha256("\n".join(reqs).encode()).hexdigest()[:16]
    dest = images_dir() / "wheels" / f"{extra}-{key}"
    if (dest / ".complete").exists():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    log(f"downloading the wheels of [{extra}] into {dest}")
    _pip_download(dest, reqs)
    _add_marker_dependencies(dest, base_python_version())
    (dest / ".complete").touch()
    return dest


def base_python_version() -> str:
    """The base image's Python version (from the dpkg database of its root)."""
    status = images_dir() / f"rootfs-{SUITE}" / "var/lib/dpkg/status"
    package = None
    for line in status.read_text().splitlines():
        if line.startswith("Package: "):
            package = line.split()[1]
        elif package and re.fullmatch(r"python3\.\d+", package) and line.startswith("Version: "):
            return line.split()[1].split("-")[0].split("+")[0]
    raise RuntimeError(f"no python3.X package in {status}")


def _add_marker_dependencies(dest: Path, python: str) -> None:
    """pip downloads for the host's Python: add what the image's Python needs besides.

    Requirements whose environment marker holds for the image's Python but not for the
    host's (e.g. `async-timeout; python_full_version < "3.11.3"`) are fetched too."""
    from packaging.markers import default_environment
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name, parse_wheel_filename

    env = {**default_environment(), "python_full_version": python,
           "python_version": ".".join(python.split(".")[:2])}
    while True:
        have = {canonicalize_name(parse_wheel_filename(w.name)[0]): w
                for w in dest.glob("*.whl")}
        missing: set[str] = set()
        for whl in have.values():
            with zipfile.ZipFile(whl) as z:
                meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
                lines = z.read(meta).decode().splitlines()
            for line in lines:
                if not line.startswith("Requires-Dist: "):
                    continue
                req = Requirement(line.split(": ", 1)[1])
                if req.marker is not None and not req.marker.evaluate({**env, "extra": ""}):
                    continue
                if canonicalize_name(req.name) not in have:
                    missing.add(str(req).split(";")[0].strip())
        if not missing:
            return
        _pip_download(dest, sorted(missing))


def _pip_download(dest: Path, reqs: list[str]) -> None:
    out = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet",
                          "--only-binary=:all:", "--dest", str(dest), *reqs],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"pip download {reqs} failed: {out.stderr[-3000:]}")


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def stage_context(image: Image) -> tuple[Path, str]:
    """A build context holding exactly what the image's Dockerfile copies; its key."""
    ctx = images_dir() / "contexts" / image.name
    shutil.rmtree(ctx, ignore_errors=True)
    ctx.mkdir(parents=True)
    h = hashlib.sha256()
    files: list[tuple[Path, Path]] = []
    dockerfile = REPO / image.dockerfile
    files.append((dockerfile, ctx / "Dockerfile"))
    if image.extra is not None:
        for name in CONTEXT_FILES:
            files.append((REPO / name, ctx / name))
        (ctx / "README.md").write_text(README_STUB)
        for tree in CONTEXT_TREES:
            for src in sorted((REPO / tree).rglob("*")):
                if src.is_file() and "__pycache__" not in src.parts and src.suffix != ".pyc" \
                        and not any(p.endswith(".egg-info") for p in src.parts):
                    files.append((src, ctx / src.relative_to(REPO)))
    if image.payload is not None:
        files += [(src, ctx / rel) for rel, src in sorted(image.payload().items())]
    for src, dst in files:
        _link_or_copy(src, dst)
        h.update(str(dst.relative_to(ctx)).encode() + b"\0" + src.read_bytes() + b"\0")
    (ctx / "wheels").mkdir(exist_ok=True)
    if image.extra is not None:
        for whl in sorted(wheels(image.extra).glob("*.whl")):
            _link_or_copy(whl, ctx / "wheels" / whl.name)
            h.update(f"wheels/{whl.name}:{whl.stat().st_size}".encode())
    return ctx, h.hexdigest()[:20]


def _stamps() -> Path:
    return images_dir() / "built.json"


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def build(image: Image, base: str) -> tuple[str, bool]:
    """Build the image unless its key is recorded and the image is still there.

    Returns (image id, whether a build ran)."""
    ctx, key = stage_context(image)
    args = [("BASE_IMAGE", base), ("OFFLINE", "1"), *image.build_args]
    inputs = [key, *(f"{k}={v}" for k, v in args)]
    parents = [v for k, v in image.build_args if k == "RUNTIME_IMAGE"]
    parents += [] if image.from_scratch else [base]
    inputs += [image_id(p) or "" for p in parents]
    full_key = hashlib.sha256("\n".join(inputs).encode()).hexdigest()[:20]
    stamps = _read_json(_stamps())
    current = image_id(f"localhost/{image.ref}")
    if current and stamps.get(image.ref, {}).get("key") == full_key \
            and stamps[image.ref].get("id") == current:
        shutil.rmtree(ctx, ignore_errors=True)
        return current, False
    log(f"building {image.ref} from {image.dockerfile}")
    began = time.monotonic()
    argv = ["bud", "--layers", "--isolation", "chroot", "--format", "docker",
            "-f", str(ctx / "Dockerfile"), "-t", f"localhost/{image.ref}"]
    for k, v in args:
        argv += ["--build-arg", f"{k}={v}"]
    buildah(*argv, str(ctx))
    shutil.rmtree(ctx, ignore_errors=True)
    new_id = image_id(f"localhost/{image.ref}") or ""
    if current and current != new_id:
        # The previous build, now untagged: its own layers go (the layer cache stays).
        buildah("rmi", current, check=False)
    stamps[image.ref] = {"key": full_key, "id": new_id}
    _stamps().write_text(json.dumps(stamps, indent=1))
    log(f"built {image.ref} in {time.monotonic() - began:.0f}s")
    return new_id, True


# ---- the registry and containerd -----------------------------------------------------------
def _imported_file() -> Path:
    from devcluster.realnode import node_dir

    return node_dir() / "imported.json"


def _pushed_file() -> Path:
    return registry.storage_dir() / "pushed.json"


def _remote_name(cri_ref: str) -> str:
    """The image's name in the local registry: `bem-runtime:0.1.0`, `pause:3.10`."""
    return cri_ref.rsplit("/", 1)[-1]


def _built_id(source_ref: str) -> str:
    wanted = image_id(source_ref)
    if wanted is None:
        raise RuntimeError(f"{source_ref} is not built")
    return wanted


def push_image(addr: str, source_ref: str, cri_ref: str, wanted: str | None = None) -> bool:
    """Put the image (id `wanted`, looked up when not given) into the local registry unless it
    already holds this id there; only the layers the registry lacks are sent."""
    wanted = wanted or _built_id(source_ref)
    name = _remote_name(cri_ref)
    pushed = _read_json(_pushed_file())
    if pushed.get(name) == wanted:
        return False
    began = time.monotonic()
    registry.push(buildah, source_ref, addr, name)
    pushed[name] = wanted
    _pushed_file().write_text(json.dumps(pushed, indent=1))
    log(f"pushed {name} to the local registry in {time.monotonic() - began:.0f}s")
    return True


def import_image(lay, addr: str, source_ref: str, cri_ref: str) -> bool:
    """Put the image into the node's containerd unless the same id is already there:
    pushed to the local registry (what it lacks), then pulled by containerd (what it lacks)."""
    from devcluster.realnode import ctr

    wanted = _built_id(source_ref)
    imported = _read_json(_imported_file())
    listed = ctr(lay, "images", "ls", "-q", f"name=={cri_ref}", check=False).stdout.split()
    if imported.get(cri_ref) == wanted and cri_ref in listed:
        return False
    push_image(addr, source_ref, cri_ref, wanted)
    began = time.monotonic()
    # The pull moves the name: the previous image's content is unreferenced afterwards.
    previous = f"{cri_ref}-gc"
    had = cri_ref in listed
    if had:
        ctr(lay, "images", "tag", "--force", cri_ref, previous, check=False)
    registry.pull_into_containerd(lambda *a, **k: ctr(lay, *a, **k), addr,
                                  _remote_name(cri_ref), cri_ref)
    imported[cri_ref] = wanted
    _imported_file().write_text(json.dumps(imported, indent=1))
    if had:
        # A synchronous delete runs containerd's garbage collection (GBs per runtime image).
        ctr(lay, "images", "rm", "--sync", previous, check=False)
    log(f"pulled {cri_ref} into containerd in {time.monotonic() - began:.0f}s")
    return True


def _pause_source() -> Path:
    from devcluster import binaries

    k8s = Path(binaries.bin_dir()).name.split("-")[2]  # bin-k8s-<version>-...
    modcache = subprocess.run(["go", "env", "GOMODCACHE"], capture_output=True, text=True,
                              check=True).stdout.strip()
    src = Path(modcache) / f"k8s.io/kubernetes@{k8s}" / "build/pause/linux/pause.c"
    if not src.is_file():
        subprocess.run(["go", "mod", "download", f"k8s.io/kubernetes@{k8s}"], check=True,
                       capture_output=True, cwd=images_dir())
    return src


def ensure_pause(lay) -> None:
    """The sandbox image, compiled from the Kubernetes pause.c (never pulled from outside)."""
    images_dir().mkdir(parents=True, exist_ok=True)
    if not image_id(PAUSE_REF):
        work = images_dir() / "pause"
        work.mkdir(parents=True, exist_ok=True)
        subprocess.run(["gcc", "-Os", "-static", "-DVERSION=v3.10-bem", "-o",
                        str(work / "pause"), str(_pause_source())], check=True)
        subprocess.run(["strip", str(work / "pause")], check=True)
        container = buildah("from", "scratch").stdout.strip()
        try:
            buildah("copy", container, str(work / "pause"), "/pause")
            buildah("config", "--entrypoint", '["/pause"]', "--user", "65535:65535", container)
            buildah("commit", "-q", container, PAUSE_REF)
        finally:
            buildah("rm", container, check=False)
    with registry.serving() as addr:
        import_image(lay, addr, PAUSE_REF, PAUSE_REF)


def ensure_all(lay=None, images: tuple[Image, ...] = ALL) -> dict[str, dict]:
    """Build (when changed), push to the local registry (when changed) and, given a node,
    pull into its containerd (when changed) the images.

    Returns per image: id, size in bytes, seconds spent, whether it was built/imported."""
    report: dict[str, dict] = {}
    images_dir().mkdir(parents=True, exist_ok=True)
    with open(images_dir() / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder per machine at a time
        # Working containers of a build that was killed hold GBs: drop them.
        buildah("rm", "--all", check=False)
        # debootstrap only when an image builds on the base (minutes on a fresh machine).
        base = "" if all(image.from_scratch for image in images) else ensure_base()
        with registry.serving() as addr:
            for image in images:
                report[image.ref] = _ensure(image, base, lay, addr)
    return report


def _ensure(image: Image, base: str, lay, addr: str) -> dict:
    began = time.monotonic()
    iid, built = build(image, base)
    source = f"localhost/{image.ref}"
    if lay is not None:
        imported = import_image(lay, addr, source, image.cri_ref)
    else:
        push_image(addr, source, image.cri_ref, iid)
        imported = False
    return {"id": iid.removeprefix("sha256:")[:12], "bytes": image_size(f"localhost/{image.ref}"),
            "seconds": round(time.monotonic() - began, 1), "built": built, "imported": imported}
