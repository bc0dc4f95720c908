"""A stand-in engine for pure unit tests of the serving layer (queueing, batching, JSON).

The HTTP tests use the real engine with the toy model; this fake only records how it was
called so batching decisions can be asserted exactly. Its batch emits word `w<seed+k>` at step
k, one word per step, like the real DecodeBatch emits a token per step.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bem_runtime.model.session import Cancelled, StepEvent
from bem_runtime.model.types import GenerationResult, RoutingDecision


@dataclass(eq=False)
class _Row:
    key: object
    request: object
    sampled: int = 0


class FakeBatch:
    def __init__(self, engine: "FakeEngine") -> None:
        self.engine, self.rows = engine, []

    def __len__(self) -> int:
        return len(self.rows)

    def admit(self, items):
        self.engine.record(len(items))
        self.rows += [_Row(key, req) for key, req in items]
        return self._emit()

    def step(self):
        if not self.rows:
            return []
        self.engine.record(None)
        return self._emit()

    def cancel(self, keys):
        gone = [r for r in self.rows if r.key in keys]
        self.rows = [r for r in self.rows if r.key not in keys]
        return [Cancelled(r.key, r.request.params.max_new_tokens - r.sampled) for r in gone]

    def _emit(self):
        events, keep = [], []
        for i, row in enumerate(self.rows):
            p = row.request.params
            word = f"w{(p.seed or 0) + row.sampled}"
            row.sampled += 1
            done = row.sampled >= p.max_new_tokens
            events.append(StepEvent(row.key, word + " ", self._result(i, row) if done else None))
            if not done:
                keep.append(row)
        self.rows = keep
        return events

    def _result(self, i, row):
        p = row.request.params
        words = [f"w{(p.seed or 0) + k}" for k in range(p.max_new_tokens)]
        return GenerationResult(
            text=" ".join(words) + ("" if row.request.use_bem else " base"),
            prompt_tokens=self.engine.count_tokens(row.request.prompt),
            completion_tokens=len(words), finish_reason="length",
            routing=[RoutingDecision(0, 0, 4, [i % self.engine.num_experts], [1.0], False)],
            timings={"prefill": 0.001, "decode": 0.002, "total": 0.003},
            safety_events={"low_confidence": 1})


@dataclass
class FakeCheckpoint:
    name: str = "bem"
    path: Path = Path("/fake/bem")
    loaded_at: float = 0.0
    nbytes: int = 1024
    num_experts: int = 4
    digest: str = "0" * 64


class FakeEngine:
    bem = FakeCheckpoint()
    device = "cpu"
    max_context = 64
    num_experts = 4
    load_report = {"spectral_clamp": 1, "trust_region": 0}

    def __init__(self, delay: float = 0.0, fail: Exception | None = None) -> None:
        self.delay = delay  # per step
        self.fail = fail
        self.batches: list[int] = []  # rows admitted per prefill
        self.steps = 0
        self.threads: set[str] = set()
        self.release = threading.Event()
        self.release.set()

    def record(self, admitted: int | None) -> None:
        self.threads.add(threading.current_thread().name)
        self.release.wait(5)
        time.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        if admitted is None:
            self.steps += 1
        else:
            self.batches.append(admitted)

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def warmup(self) -> None:
        pass

    def route(self, prompt: str) -> list[RoutingDecision]:
        return [RoutingDecision(0, 0, 4, [1], [1.0], False)]

    def open_batch(self, use_bem: bool = True, hold: bool = False) -> FakeBatch:
        self.held = hold  # the fake computes nothing, so holding finished rows costs nothing
        return FakeBatch(self)
