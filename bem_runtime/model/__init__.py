"""BEM model layer: base model + BEM checkpoint, chunk-sticky routing, batched generation.

Implements docs/BEM.md. Details that page leaves open are fixed here:
- Tensor names: `A.<m>` / `B.<m>` where <m> is the module's qualified name in the loaded causal
  LM (`model.layers.3.mlp.down_proj`, `transformer.h.0.attn.c_proj`); `router.weight`,
  `router.bias`. Missing, extra, mis-shaped, non-float or non-finite tensors are all refused.
- `router_layer` (optional, default: the first attached layer) must not come after the first
  attached layer, so the router input never depends on an adapter.
- `governance.min_confidence` (optional) may sit in the checkpoint; overrides win over it.
- Hysteresis applies to top_k == 1 only; with top_k > 1 each chunk takes the plain top-k.
  The reference for hysteresis is the previous chunk's chosen expert, also when that chunk was
  gated to the base model by min_confidence (whose test uses the chosen expert's mean).
- Q/K/V sites need `Engine.load(..., allow_qkv=True)`.
- Routing decisions cover the whole returned sequence (prompt + completion); a chunk whose first
  token is the last generated one is decided too (its gate depends on the previous chunk only).
"""

from .checkpoint import Checkpoint
from .engine import Engine
from .errors import CheckpointError, NonFiniteLogitsError, PromptTooLongError
from .types import GenerationRequest, GenerationResult, RoutingDecision, RoutingOverrides, SamplingParams

__all__ = [
    "Checkpoint",
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
