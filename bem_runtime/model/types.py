"""Public value types of the model layer (imported by the scheduler and the HTTP layer)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SamplingParams:
    """How to decode one request. temperature == 0 means greedy."""

    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}")
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        if not (0.0 < self.top_p <= 1.0):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if self.seed is not None and (not isinstance(self.seed, int) or self.seed < 0):
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError("stop must be a tuple of non-empty strings")


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    params: SamplingParams = field(default_factory=SamplingParams)
    # A checkpoint's name, or the loaded checkpoint itself (so that a request keeps the one it
    # was accepted for even if the name is replaced meanwhile); None: the engine's start checkpoint.
    checkpoint: Any = None
    use_bem: bool = True  # False: the bare base model


@dataclass
class RoutingDecision:
    """Gate of one chunk: positions [start, end) use experts/weights (or the base alone)."""

    chunk: int
    start: int
    end: int
    experts: list[int]
    weights: list[float]
    used_base_only: bool


@dataclass
class GenerationResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "length" | "stop"
    routing: list[RoutingDecision]
    timings: dict[str, float]  # seconds: "tokenize", "prefill", "decode", "total"
    safety_events: dict[str, int]  # e.g. {"low_confidence": 2}
    checkpoint: str | None = None  # the checkpoint's name; None for the bare base model


@dataclass(frozen=True)
class RoutingOverrides:
    """Deployment-time overrides of the checkpoint's routing and governance settings."""

    top_k: int | None = None
    chunk_size: int | None = None
    hysteresis: float | None = None
    temperature: float | None = None
    sigma_max: float | None = None
    trust_region: float | None = None
    min_confidence: float | None = None
