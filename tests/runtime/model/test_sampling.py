"""Batched token selection: every row samples from its own distribution with its own seed."""

from __future__ import annotations

import collections

import torch

from bem_runtime.model.sampling import make_generator, select_tokens
from bem_runtime.model.types import SamplingParams

LOGITS = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))


def _draw(params: SamplingParams, n: int, neighbours: int = 0) -> list[int]:
    """n tokens for one row, which sits after `neighbours` other sampling rows in each batch."""
    gens = [make_generator(SamplingParams(seed=100 + k)) for k in range(neighbours)]
    gen = make_generator(params)
    rows = torch.stack([torch.randn(4) for _ in range(neighbours)] + [LOGITS])
    out = []
    for _ in range(n):
        picks = select_tokens(rows, [SamplingParams(temperature=0.7)] * neighbours + [params], gens + [gen])
        out.append(picks[-1])
    return out


def test_a_row_picks_the_same_tokens_whatever_its_neighbours():
    params = SamplingParams(temperature=1.0, top_p=0.9, seed=7)
    alone = _draw(params, 50)
    assert _draw(params, 50, neighbours=3) == alone
    assert len(set(alone)) > 1  # it does sample


def test_sampling_follows_the_distribution_and_top_p_cuts_the_tail():
    counts = collections.Counter(_draw(SamplingParams(temperature=1.0, seed=3), 4000))
    for token, p in enumerate([0.5, 0.3, 0.15, 0.05]):
        assert abs(counts[token] / 4000 - p) < 0.03, counts
    nucleus = collections.Counter(_draw(SamplingParams(temperature=1.0, top_p=0.75, seed=3), 2000))
    assert set(nucleus) == {0, 1}  # 0.5 + 0.3 reaches 0.75; 0.15 and 0.05 are cut
    assert abs(nucleus[0] / 2000 - 0.5 / 0.8) < 0.04, nucleus


def test_greedy_rows_take_the_argmax_and_draw_nothing():
    gen = make_generator(SamplingParams(seed=1))
    state = gen.get_state()
    rows = torch.stack([LOGITS.flip(0), LOGITS])
    assert select_tokens(rows, [SamplingParams(temperature=0.0)] * 2, [gen, gen]) == [3, 0]
    assert torch.equal(gen.get_state(), state)


def test_a_row_without_top_p_is_unaffected_by_a_neighbour_with_it():
    """Nucleus rows walk the vocabulary by falling probability; a plain row never does, even
    beside one (its draws would map to other tokens)."""
    logits = LOGITS[[2, 0, 3, 1]]  # not already in falling order
    params = SamplingParams(temperature=1.0, seed=9)
    gen = make_generator(params)
    alone = [select_tokens(logits[None], [params], [gen])[0] for _ in range(40)]
    gen, other = make_generator(params), make_generator(SamplingParams(seed=1))
    nucleus = SamplingParams(temperature=1.0, top_p=0.5, seed=1)
    beside = [select_tokens(torch.stack([logits, logits]), [params, nucleus], [gen, other])[0]
              for _ in range(40)]
    assert beside == alone
