"""The registry's start list with a stand-in engine whose install step fails (the real toy engine
cannot be made to fail there on demand); the HTTP tests cover real loads and the /ready answer."""
from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

from prometheus_client import CollectorRegistry

from bem_runtime.metrics import Metrics
from bem_runtime.registry import EntryState, Registry
from bem_runtime.settings import Settings


class InstallFails:
    """Reads and builds any checkpoint; installing the one named `bad` raises, as a device
    running out of memory would."""

    bem = SimpleNamespace(name="start", path="start")

    def read_files(self, path: Path) -> Path:
        return path

    def build_checkpoint(self, name: str, files: Path) -> SimpleNamespace:
        return SimpleNamespace(name=name, load_report={}, digest="0" * 64)

    def add_checkpoint(self, ckpt: SimpleNamespace) -> None:
        if ckpt.name == "bad":
            raise RuntimeError("CUDA out of memory")


def test_a_start_list_checkpoint_the_engine_fails_to_install_is_counted_and_dropped(tmp_path):
    samples = CollectorRegistry()

    async def main() -> tuple[Registry, list[list[str]]]:
        registry = Registry(Settings(), Metrics(samples))
        items = {"bad": tmp_path / "bad", "good": tmp_path / "good"}
        for name, path in items.items():
            registry.expect(name, path)

        async def call(fn, *args):
            return fn(*args)

        registry.attach(InstallFails(), call)
        pending = [registry.loading()]
        await registry.load_start_list(items)
        return registry, [*pending, registry.loading()]

    registry, pending = asyncio.run(main())
    assert pending == [["bad", "good"], []]  # /ready waited for both, then for none
    assert registry.served() == ["good", "start"]
    assert registry.entries["good"].state is EntryState.LOADED and "bad" not in registry.entries
    assert samples.get_sample_value("bem_checkpoint_load_failures_total", {"reason": "error"}) == 1
    assert samples.get_sample_value("bem_checkpoints_resident") == 2
