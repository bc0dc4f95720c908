"""Token selection: greedy, temperature and nucleus sampling with a generator per request,
for every row of a batch in batched operations and one transfer to the host."""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import torch

from .types import SamplingParams


def make_generator(params: SamplingParams) -> torch.Generator:
    """One generator per request, so its draws do not depend on the other rows of the batch. It
    lives on the CPU on every device: a row draws one number a step from it."""
    gen = torch.Generator(device="cpu")
    gen.manual_seed(params.seed if params.seed is not None else secrets.randbits(63))
    return gen


def select_tokens(logits: torch.Tensor, params: Sequence[SamplingParams],
                  gens: Sequence[torch.Generator]) -> list[int]:
    """The next token of every row of logits [B, V] (float32).

    Each sampling row draws one uniform number from its own generator and takes the token at
    which its cumulative probability passes that number (inverse CDF), so what a row picks
    depends on its logits and its seed only, never on its neighbours. A per-row sampler costs a
    handful of kernel launches and a device sync per row, which on a GPU was most of a decode
    step at 32 rows; here it is a few batched operations and one `tolist`.
    """
    picks = logits.argmax(-1)
    plain = [i for i, p in enumerate(params) if p.temperature != 0 and p.top_p >= 1.0]
    nucleus = [i for i, p in enumerate(params) if p.temperature != 0 and p.top_p < 1.0]
    # The two kinds walk the vocabulary in different orders (as is, and by falling probability),
    # so they are separate batches: a row's order never depends on what its neighbours asked for.
    for rows, by_mass in ((plain, False), (nucleus, True)):
        if rows:
            idx = torch.tensor(rows, dtype=torch.long, device=logits.device)
            picks[idx] = _sample([params[i] for i in rows], logits[idx], [gens[i] for i in rows], by_mass)
    return picks.tolist()


def _sample(params: Sequence[SamplingParams], logits: torch.Tensor, gens: Sequence[torch.Generator],
            nucleus: bool) -> torch.Tensor:
    dev = logits.device
    x = logits.double()
    temps = torch.tensor([p.temperature for p in params], dtype=torch.float64, device=dev)
    # Shifted by the max and in float64: a tiny temperature (down to 5e-324) tends to greedy
    # instead of dividing by a float32 zero into NaN.
    probs = torch.softmax((x - x.max(-1, keepdim=True).values) / temps[:, None], dim=-1)
    order = None
    if nucleus:
        top_p = torch.tensor([p.top_p for p in params], dtype=torch.float64, device=dev)
        probs, order = torch.sort(probs, descending=True, stable=True, dim=-1)
        # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
        probs = probs.masked_fill((probs.cumsum(-1) - probs) >= top_p[:, None], 0.0)
    cum = probs.cumsum(-1)
    draws = torch.tensor([float(torch.rand((), generator=g, dtype=torch.float64)) for g in gens],
                         dtype=torch.float64, device=dev)
    pos = torch.searchsorted(cum, (draws * cum[:, -1])[:, None], right=True).clamp_(max=cum.shape[-1] - 1)
    return (order.gather(-1, pos) if order is not None else pos).squeeze(-1)
