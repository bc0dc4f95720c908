"""Shared toy assets: a tiny random Llama and GPT-2 with matching BEM checkpoints (fp32).

Engines run on the CPU; BEM_TEST_DEVICE=cuda runs the same tests on a GPU (still fp32).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from bem_runtime.model import Engine, RoutingOverrides
from bem_runtime.model.toy import write_toy_assets

ARCHS = ("llama", "gpt2")
DEVICE = os.environ.get("BEM_TEST_DEVICE", "cpu")


@pytest.fixture(scope="session")
def toy_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("toy")
    return {arch: write_toy_assets(root / arch, arch=arch, seed=0) for arch in ARCHS}


@pytest.fixture(scope="session")
def engines(toy_dirs) -> dict[str, Engine]:
    return {arch: Engine.load(*toy_dirs[arch], device=DEVICE, dtype="float32") for arch in ARCHS}


@pytest.fixture(scope="session")
def llama(engines) -> Engine:
    return engines["llama"]


@pytest.fixture
def load_engine(toy_dirs) -> Callable[..., Engine]:
    """A fresh engine (for tests that change settings or break weights)."""

    def load(arch: str = "llama", overrides: RoutingOverrides | None = None, bem_dir: Path | None = None) -> Engine:
        base, bem = toy_dirs[arch]
        return Engine.load(base, bem_dir or bem, device=DEVICE, dtype="float32", overrides=overrides)

    return load


@pytest.fixture
def edit_checkpoint(toy_dirs, tmp_path) -> Callable[..., Path]:
    """Copy a toy checkpoint, let a test edit its config and tensors, return the new directory."""

    def edit(
        arch: str = "llama",
        config: Callable[[dict], None] | None = None,
        tensors: Callable[[dict[str, torch.Tensor]], None] | None = None,
    ) -> Path:
        out = tmp_path / f"bem-{arch}"
        shutil.copytree(toy_dirs[arch][1], out, dirs_exist_ok=True)
        if config is not None:
            raw = json.loads((out / "bem_config.json").read_text())
            config(raw)
            (out / "bem_config.json").write_text(json.dumps(raw))
        if tensors is not None:
            data = load_file(str(out / "experts.safetensors"))
            tensors(data)
            save_file({k: v.contiguous() for k, v in data.items()}, str(out / "experts.safetensors"))
        return out

    return edit
