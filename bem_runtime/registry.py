"""The checkpoints this process serves over its one base model, by name: which are resident,
which are still loading from the start list, and the admin operations that change the set.

A load reads the checkpoint's files on another thread while decoding goes on, then validates,
governs and installs it on the engine thread between decode steps (like every other torch call).
A load that fails changes nothing. Replacing or removing a name only changes what new requests get: a
request holds the checkpoint object it was accepted for until it finishes.
"""
from __future__ import annotations

import asyncio
import enum
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable

from bem_runtime import errors
from bem_runtime.metrics import Metrics
from bem_runtime.settings import (CHECKPOINT_NAME_RULE, Settings, checkpoint_root,
                                  is_checkpoint_name)

log = logging.getLogger("bem_runtime.registry")
LOADING_RETRY_AFTER_S = 5
MAX_CHECKPOINTS_FLAG = "--max-checkpoints (env BEM_MAX_CHECKPOINTS)"


class EntryState(enum.Enum):
    LOADING = "loading"
    LOADED = "loaded"


class LoadFailure(enum.Enum):
    """Why a load was refused (the `reason` label of bem_checkpoint_load_failures_total)."""

    INVALID = "invalid_checkpoint"  # not a checkpoint for this base (422)
    PATH = "path"  # outside --checkpoint-root (400)
    CAPACITY = "capacity"  # --max-checkpoints reached (409)
    ERROR = "error"  # anything else (a bug or the engine failing)


@dataclass
class Entry:
    name: str
    path: Path
    state: EntryState = EntryState.LOADING
    checkpoint: Any = None  # bem_runtime.model.Checkpoint once loaded

    def json(self) -> dict:
        """The admin API's shape; loaded_at is RFC 3339 UTC, the figures null while loading."""
        ckpt = self.checkpoint
        loaded_at = (datetime.fromtimestamp(ckpt.loaded_at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
                     if ckpt is not None else None)
        return {"name": self.name, "path": str(self.path), "state": self.state.value,
                "loaded_at": loaded_at,
                "bytes": ckpt.nbytes if ckpt is not None else None,
                "num_experts": ckpt.num_experts if ckpt is not None else None}


# Engine work, run on the engine thread: call(fn, *args) -> awaitable result.
EngineCall = Callable[..., Awaitable[Any]]


class Registry:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.capacity = settings.max_checkpoints
        self.root = checkpoint_root(settings)
        self.metrics = metrics
        self.entries: dict[str, Entry] = {}
        self.engine: Any = None
        self._call: EngineCall | None = None
        self._lock = asyncio.Lock()  # one admin change at a time

    # Set-up

    def expect(self, name: str, path: Path) -> None:
        """A checkpoint that will load at start: 503 + Retry-After until it has."""
        self.entries[name] = Entry(name, path)

    def attach(self, engine: Any, call: EngineCall) -> None:
        """The engine is loaded: its start checkpoint is resident."""
        self.engine, self._call = engine, call
        start = engine.bem
        self.entries[start.name] = Entry(start.name, Path(start.path).resolve(), EntryState.LOADED, start)
        self._count()

    async def load_start_list(self, items: dict[str, Path]) -> None:
        """Load the start list in order; a checkpoint that fails is logged, counted and dropped,
        so one bad checkpoint never keeps the process from serving (or turning Ready with) the
        others."""
        for name, path in items.items():
            try:
                await self.put(name, str(path), start_list=True)
                continue
            except errors.ApiError as err:  # counted by put()
                message = err.message
            except Exception as exc:  # the engine failing to install it: a bug or no memory
                self._failed(LoadFailure.ERROR)
                message = f"{type(exc).__name__}: {exc}"
            self.entries.pop(name, None)
            self._count()
            log.error("Failed to load a checkpoint of the start list",
                      extra={"checkpoint": name, "path": str(path), "error": message})

    def loading(self) -> list[str]:
        """The start-list checkpoints not loaded (nor failed) yet: while any is, /ready is 503."""
        return sorted(n for n, e in self.entries.items() if e.state is EntryState.LOADING)

    # Requests

    def served(self) -> list[str]:
        return sorted(n for n, e in self.entries.items() if e.checkpoint is not None)

    def _quoted(self) -> str:
        return ", ".join(f"'{n}'" for n in self.served()) or "none"

    def select(self, name: str) -> Any:
        """The checkpoint a request names: 404 naming the field and the served names, or 503
        while a start-list checkpoint is still loading."""
        entry = self.entries.get(name)
        if entry is None:
            raise errors.NotFound(f"model '{name}' is not served here; use one of "
                                  f"{self._quoted()} (see GET /v1/models)", field="model")
        if entry.checkpoint is None:
            raise errors.ServiceUnavailable(f"model '{name}' is still loading; retry shortly",
                                            retry_after=LOADING_RETRY_AFTER_S, type_="loading")
        return entry.checkpoint

    # Admin

    def resolve_path(self, raw: str) -> Path:
        """An absolute path, or one under the root; 400 when it resolves (symlinks included)
        outside the root."""
        if self.root is None:
            raise errors.InvalidInput("no checkpoint root: set --checkpoint-root "
                                      "(env BEM_CHECKPOINT_ROOT)", field="path")
        root = self.root.resolve()
        try:
            path = (root / raw).resolve()  # an absolute raw replaces root
        except (OSError, RuntimeError, ValueError) as exc:  # symlink loop, NUL byte
            raise errors.InvalidInput(f"path '{raw}' cannot be resolved: {exc}", field="path") from None
        if not path.is_relative_to(root):
            raise errors.InvalidInput(f"path '{raw}' resolves to {path}, outside the checkpoint "
                                      f"root {root} (--checkpoint-root, env BEM_CHECKPOINT_ROOT)",
                                      field="path")
        return path

    async def put(self, name: str, raw_path: str, *, start_list: bool = False) -> tuple[int, Entry]:
        """Load `name` from a directory; (201, entry) when new, (200, entry) when it was already
        loaded from that path, the old one replaced otherwise."""
        if not is_checkpoint_name(name):
            raise errors.InvalidInput(f"name '{name[:80]}' is not a DNS-1123 label "
                                      f"({CHECKPOINT_NAME_RULE})", field="name")
        async with self._lock:
            try:
                path = Path(raw_path).resolve() if start_list else self.resolve_path(raw_path)
            except errors.ApiError:
                self._failed(LoadFailure.PATH)
                raise
            current = self.entries.get(name)
            if current is not None and current.checkpoint is not None:
                if current.path == path:
                    return 200, current
            elif not start_list and len(self.entries) >= self.capacity:
                self._failed(LoadFailure.CAPACITY)
                raise errors.Conflict(
                    f"all {self.capacity} checkpoint slots are in use ({self._quoted()}); "
                    f"DELETE one first or raise {MAX_CHECKPOINTS_FLAG}", field="name")
            ckpt = await self._load(name, path)
            await self._call(self.engine.add_checkpoint, ckpt)
            self.metrics.observe_load_report(ckpt.load_report)
            self.entries[name] = Entry(name, path, EntryState.LOADED, ckpt)
            self._count()
            log.info("Loaded a checkpoint", extra={"checkpoint": name, "path": str(path),
                                                   "digest": ckpt.digest[:16],
                                                   "replaced": current is not None})
            return (200 if current is not None and not start_list else 201), self.entries[name]

    async def _load(self, name: str, path: Path) -> Any:
        from bem_runtime.model.errors import CheckpointError  # torch stays out of import time

        start = time.perf_counter()
        try:
            files = await asyncio.get_running_loop().run_in_executor(None, self.engine.read_files, path)
            ckpt = await self._call(self.engine.build_checkpoint, name, files)
        except CheckpointError as exc:
            self._failed(LoadFailure.INVALID)
            raise errors.InvalidCheckpoint(f"'{name}' is not a valid checkpoint for this base "
                                           f"model: {exc}", field="path") from None
        except Exception as exc:
            self._failed(LoadFailure.ERROR)
            log.exception("Checkpoint load failed", extra={"checkpoint": name})
            raise errors.ApiError(f"loading '{name}' failed: {exc}") from None
        self.metrics.checkpoint_load_duration.observe(time.perf_counter() - start)
        return ckpt

    async def delete(self, name: str) -> None:
        async with self._lock:
            entry = self.entries.get(name)
            if entry is None or entry.checkpoint is None:
                raise errors.NotFound(f"no checkpoint named '{name}'; resident: {self._quoted()}",
                                      field="name")
            if len(self.served()) == 1:
                raise errors.Conflict(f"'{name}' is the last resident checkpoint; PUT another "
                                      "one first", field="name")
            await self._call(self.engine.remove_checkpoint, name)
            del self.entries[name]
            self._count()
            log.info("Removed a checkpoint", extra={"checkpoint": name})

    def _failed(self, reason: LoadFailure) -> None:
        self.metrics.checkpoint_load_failures.labels(reason.value).inc()

    def _count(self) -> None:
        self.metrics.checkpoints_resident.set(len(self.served()))
