"""Token selection: greedy, temperature and nucleus sampling with a generator per request."""

from __future__ import annotations

import secrets

import torch

from .types import SamplingParams


def make_generator(params: SamplingParams, device: torch.device) -> torch.Generator:
    """One generator per request, so its draws do not depend on the other rows of the batch."""
    gen = torch.Generator(device=device)
    gen.manual_seed(params.seed if params.seed is not None else secrets.randbits(63))
    return gen


def select_token(logits: torch.Tensor, params: SamplingParams, gen: torch.Generator) -> int:
    """Pick the next token from one row's logits [V] (float32)."""
    if params.temperature == 0:
        return int(torch.argmax(logits).item())
    # Shifted by the max and in float64: a tiny temperature (down to 5e-324) tends to greedy
    # instead of dividing by a float32 zero into NaN.
    shifted = logits.double() - logits.max().double()
    probs = torch.softmax(shifted / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        cumulative = torch.cumsum(sorted_probs, dim=-1)
        # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
        drop = (cumulative - sorted_probs) >= params.top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        choice = torch.multinomial(sorted_probs, 1, generator=gen)
        return int(order[choice].item())
    return int(torch.multinomial(probs, 1, generator=gen).item())
