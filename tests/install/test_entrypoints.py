"""Each image's entry point starts from a clean, non-editable install of the package.

Stands in for `docker run <image> --help` where there is no container engine: the build
context is exactly what the Dockerfile copies, the wheel is built from it, installed with
--no-deps into a fresh virtualenv (the pinned dependencies come from the project's
environment, behind the wheel on sys.path), and the image's ENTRYPOINT + CMD runs there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from .support import ROOT, copy_sources, entry_command, parse_dockerfile

DOCKERFILES = ["Dockerfile.operator", "Dockerfile.runtime"]


def _run(*args: str | Path, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    out = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(map(str, args))} failed:\n{out.stdout}\n{out.stderr}"
    return out


@pytest.fixture(scope="module")
def clean_install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv holding only a wheel built from the Docker build context."""
    tmp = tmp_path_factory.mktemp("clean-install")
    context = tmp / "context"
    sources = {s for name in DOCKERFILES for s in copy_sources(parse_dockerfile(name))}
    for source in sorted(sources):
        src, dest = ROOT / source, context / source
        if src.is_dir():
            shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)
    wheels = tmp / "wheels"
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", wheels, context, cwd=tmp)
    venv = tmp / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp)
    python = venv / "bin" / "python"
    [wheel] = wheels.glob("*.whl")
    _run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", wheel,
         cwd=tmp)
    purelib = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                        cwd=tmp).stdout.strip())
    # Dependencies only: a plain path entry, so the project's editable hooks stay unloaded.
    (purelib / "zz_project_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def test_packages_come_from_the_wheel_not_the_source_tree(clean_install: Path) -> None:
    out = _run(clean_install / "bin" / "python", "-c",
               "import bem_operator, bem_runtime; print(bem_operator.__file__); "
               "print(bem_runtime.__file__)", cwd=clean_install)
    for line in out.stdout.split():
        assert Path(line).is_relative_to(clean_install), f"{line} is outside the clean install"


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_image_entry_point_starts(clean_install: Path, dockerfile: str) -> None:
    command = entry_command(parse_dockerfile(dockerfile))
    assert command, f"{dockerfile} has no ENTRYPOINT"
    executable = clean_install / "bin" / command[0]
    assert executable.is_file(), f"{command[0]} is not a console script of the wheel"
    out = _run(executable, *command[1:], "--help", cwd=clean_install)
    assert "usage" in out.stdout.lower()
