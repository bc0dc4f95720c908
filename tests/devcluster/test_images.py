"""The image build's cache key and inputs, without building anything: an unchanged tree
rebuilds nothing, a changed source or wheel rebuilds, and the base image's Python decides
which marker-only dependencies are fetched."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from devcluster import images


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    repo = tmp_path / "repo"
    for rel, text in {"pyproject.toml": "[project]\n", "README.md": "readme",
                      "Dockerfile.runtime": "FROM x\n", "operator/bem_operator/a.py": "A = 1\n",
                      "bem_runtime/b.py": "B = 1\n", "devcluster/c.py": "C = 1\n"}.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "torch-9-py3-none-any.whl").write_bytes(b"x" * 10)
    monkeypatch.setattr(images, "REPO", repo)
    monkeypatch.setattr(images, "wheels", lambda extra: wheels)
    monkeypatch.setenv("BEM_DEVCLUSTER_CACHE", str(tmp_path / "cache"))
    return repo


def _key() -> str:
    ctx, key = images.stage_context(images.RUNTIME)
    assert (ctx / "Dockerfile").read_text().startswith("FROM ")
    assert (ctx / "wheels" / "torch-9-py3-none-any.whl").exists()
    return key


def test_an_unchanged_tree_has_the_same_key_and_caches_do_not_count(tree: Path) -> None:
    first = _key()
    (tree / "bem_runtime" / "__pycache__").mkdir()
    (tree / "bem_runtime" / "__pycache__" / "b.cpython-311.pyc").write_bytes(b"\0")
    assert _key() == first


@pytest.mark.parametrize("change", ["source", "dockerfile", "wheel"])
def test_what_the_build_copies_changes_the_key(tree: Path, change: str) -> None:
    first = _key()
    if change == "source":
        (tree / "bem_runtime" / "b.py").write_text("B = 2\n")
    elif change == "dockerfile":
        (tree / "Dockerfile.runtime").write_text("FROM y\n")
    else:
        (images.wheels("runtime") / "extra-1-py3-none-any.whl").write_bytes(b"y")
    assert _key() != first


@pytest.mark.parametrize("change", ["readme", "tests"])
def test_docs_and_tests_are_not_in_the_context(tree: Path, change: str) -> None:
    """An edit to the docs or the tests neither rebuilds an image nor moves a layer."""
    first = _key()
    if change == "readme":
        (tree / "README.md").write_text("a new paragraph\n")
    else:
        (tree / "tests").mkdir()
        (tree / "tests" / "test_x.py").write_text("def test_x(): pass\n")
    assert _key() == first
    ctx = images.images_dir() / "contexts" / images.RUNTIME.name
    assert (ctx / "README.md").read_text() == images.README_STUB
    assert not (ctx / "tests").exists()


def _wheel(path: Path, name: str, requires: list[str]) -> None:
    with zipfile.ZipFile(path, "w") as z:
        meta = "".join(f"Requires-Dist: {r}\n" for r in requires)
        z.writestr(f"{name}-1.dist-info/METADATA", f"Name: {name}\nVersion: 1\n{meta}")


def test_marker_dependencies_of_the_image_python_are_fetched(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _wheel(tmp_path / "redis-1-py3-none-any.whl", "redis",
           ['async-timeout>=4.0.3; python_full_version < "3.11.3"',
            'hiredis>=1; extra == "hiredis"'])
    asked: list[list[str]] = []

    def fake_download(argv, **_):
        asked.append(argv[argv.index("--dest") + 2:])
        _wheel(tmp_path / "async_timeout-5-py3-none-any.whl", "async_timeout", [])
        return type("Done", (), {"returncode": 0, "stderr": ""})()

    monkeypatch.setattr(images.subprocess, "run", fake_download)
    images._add_marker_dependencies(tmp_path, "3.11.2")
    assert asked == [["async-timeout>=4.0.3"]]  # not the extra's hiredis
    asked.clear()
    (tmp_path / "async_timeout-5-py3-none-any.whl").unlink()
    images._add_marker_dependencies(tmp_path, "3.11.7")  # the marker is false there
    assert asked == []


def test_the_mirror_comes_from_the_machines_apt_sources() -> None:
    mirror = images.apt_mirror()
    assert "://" in mirror and "security" not in mirror
