"""BEM model layer: base model + BEM checkpoint, chunk-sticky routing, batched generation.

See docs/BEM.md for the maths this package implements.
"""

from .engine import Engine
from .errors import CheckpointError, NonFiniteLogitsError, PromptTooLongError
from .types import GenerationRequest, GenerationResult, RoutingDecision, RoutingOverrides, SamplingParams

__all__ = [
    "CheckpointError",
    "Engine",
    "GenerationRequest",
    "GenerationResult",
    "NonFiniteLogitsError",
    "PromptTooLongError",
    "RoutingDecision",
    "RoutingOverrides",
    "SamplingParams",
]
