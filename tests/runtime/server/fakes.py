"""A stand-in engine for pure unit tests of the serving layer (queueing, batching, JSON).

The HTTP tests use the real engine with the toy model; this fake only records how it was
called so batching decisions can be asserted exactly.
"""
from __future__ import annotations

import threading
import time

from bem_runtime.model.types import GenerationResult, RoutingDecision


class FakeEngine:
    device = "cpu"
    max_context = 64
    num_experts = 4
    load_report = {"spectral_clamp": 1, "trust_region": 0}

    def __init__(self, delay: float = 0.0, fail: Exception | None = None) -> None:
        self.delay = delay
        self.fail = fail
        self.batches: list[int] = []
        self.threads: set[str] = set()
        self.release = threading.Event()
        self.release.set()

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def warmup(self) -> None:
        pass

    def route(self, prompt: str) -> list[RoutingDecision]:
        return [RoutingDecision(0, 0, 4, [1], [1.0], False)]

    def generate_batch(self, requests, on_token=None, *, use_bem=True):
        self.threads.add(threading.current_thread().name)
        self.batches.append(len(requests))
        self.release.wait(5)
        time.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        out = []
        for i, req in enumerate(requests):
            words = [f"w{(req.params.seed or 0) + k}" for k in range(req.params.max_new_tokens)]
            if on_token is not None:
                for w in words:
                    on_token(i, w + " ")
            out.append(GenerationResult(
                text=" ".join(words) + ("" if use_bem else " base"),
                prompt_tokens=self.count_tokens(req.prompt),
                completion_tokens=len(words), finish_reason="length",
                routing=[RoutingDecision(0, 0, 4, [i % self.num_experts], [1.0], False)],
                timings={"prefill": 0.001, "decode": 0.002, "total": 0.003},
                safety_events={"low_confidence": 1}))
        return out
