"""The local registry moves images by layer: an image built on another one costs the registry
its own layer only, and a push of an unchanged image sends nothing.

Real processes: the registry built by build-addons.sh (a Go build: e2e tier) and buildah."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from devcluster import images, registry

pytestmark = pytest.mark.e2e


def _stored_bytes(root: Path) -> int:
    return sum(f.stat().st_size for f in (root / "data").rglob("*") if f.is_file())


@pytest.fixture
def two_images(tmp_path: Path):
    """`lower`: one 8 MiB layer; `upper`: `lower` plus a few bytes."""
    tag = secrets.token_hex(4)
    lower, upper = f"localhost/bem-test-lower:{tag}", f"localhost/bem-test-upper:{tag}"
    (tmp_path / "big.bin").write_bytes(os.urandom(8 << 20))
    (tmp_path / "small.txt").write_text("the upper image's own layer\n")
    for ref, parent, payload in ((lower, "scratch", "big.bin"), (upper, lower, "small.txt")):
        container = images.buildah("from", parent).stdout.strip()
        try:
            images.buildah("copy", container, str(tmp_path / payload), f"/{payload}")
            images.buildah("commit", "-q", container, ref)
        finally:
            images.buildah("rm", container, check=False)
    yield lower, upper
    images.buildah("rmi", upper, lower, check=False)


def test_an_image_on_another_costs_its_own_layer(
        two_images: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "storage_dir", lambda: tmp_path / "registry")
    lower, upper = two_images
    with registry.serving() as addr:
        assert addr.startswith("127.0.0.1:")  # loopback only
        registry.push(images.buildah, lower, addr, "lower:1")
        after_lower = _stored_bytes(tmp_path / "registry")
        assert after_lower > 8 << 20
        registry.push(images.buildah, upper, addr, "upper:1")
        grew = _stored_bytes(tmp_path / "registry") - after_lower
        assert 0 < grew < 64 << 10, f"the upper image added {grew} bytes, not its own layer"
        registry.push(images.buildah, upper, addr, "upper:1")
        assert _stored_bytes(tmp_path / "registry") - after_lower == grew


def test_push_image_skips_an_id_already_pushed(
        two_images: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "storage_dir", lambda: tmp_path / "registry")
    lower, _ = two_images
    with registry.serving() as addr:
        assert images.push_image(addr, lower, "docker.io/library/lower:1") is True
        assert images.push_image(addr, lower, "docker.io/library/lower:1") is False
