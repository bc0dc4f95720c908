"""Routing rules of BEM.md: top-k + renormalisation, hysteresis, temperature, chunk 0, min_confidence."""

from __future__ import annotations

import pytest
import torch

from bem_runtime.model.routing import RoutingPolicy, RoutingState


def policy(**kw) -> RoutingPolicy:
    args = dict(num_experts=4, chunk_size=4, top_k=1, hysteresis=0.0, temperature=1.0, min_confidence=None)
    args.update(kw)
    return RoutingPolicy(**args)


def one_hot_probs(experts: list[int], strength: float = 0.7) -> torch.Tensor:
    """Router probabilities [T, 4] favouring the given expert at each position."""
    probs = torch.full((len(experts), 4), (1 - strength) / 3)
    probs[torch.arange(len(experts)), torch.tensor(experts)] = strength
    return probs


def test_top_k_picks_the_largest_means_and_renormalises():
    d = policy(top_k=2).decide(0, [0.1, 0.5, 0.3, 0.1], previous=None)
    assert d.experts == [1, 2]
    assert d.weights == pytest.approx([0.625, 0.375])
    d3 = policy(top_k=3).decide(0, [0.1, 0.5, 0.3, 0.1], previous=None)
    assert d3.experts == [1, 2, 0] and sum(d3.weights) == pytest.approx(1.0)


def test_hysteresis_keeps_the_previous_expert_unless_beaten_by_more_than_tau():
    mean = [0.40, 0.45, 0.10, 0.05]
    assert policy(hysteresis=0.1).decide(1, mean, previous=0).experts == [0]  # 0.05 <= tau: keep
    assert policy(hysteresis=0.01).decide(1, mean, previous=0).experts == [1]  # 0.05 > tau: switch
    assert policy(hysteresis=0.1).decide(0, mean, previous=None).experts == [1]  # first chunk: best
    assert policy(hysteresis=0.1).decide(1, mean, previous=0).weights == [1.0]


def test_temperature_sharpens_or_flattens_probabilities():
    logits = torch.tensor([[2.0, 1.0, 0.0, 0.0]])
    hot, cold = policy(temperature=4.0).probabilities(logits), policy(temperature=0.25).probabilities(logits)
    torch.testing.assert_close(hot, torch.softmax(logits / 4.0, -1))
    assert cold[0, 0] > torch.softmax(logits, -1)[0, 0] > hot[0, 0]


def test_chunk_zero_uses_prompt_tokens_only_and_chunk_k_uses_chunk_k_minus_1():
    # A 1-token prompt favouring expert 0, then continuation tokens favouring expert 1, fed as
    # one teacher-forcing forward (prompt_len=1, chunk size 4): chunk 0 must ignore positions 1..3.
    state = RoutingState(policy(), prompt_lens=[1], device=torch.device("cpu"))
    probs = one_hot_probs([0, 1, 1, 1, 2, 2, 2, 2])
    gates = state.feed(probs.unsqueeze(0), counts=[8])[0]
    decisions = state.finish(0, 8)
    assert [d.experts for d in decisions] == [[0], [1]]  # chunk 1: mean over positions 0..3
    assert torch.equal(gates[:4], torch.tensor([[1.0, 0, 0, 0]] * 4))
    assert torch.equal(gates[4:], torch.tensor([[0, 1.0, 0, 0]] * 4))


def test_decisions_are_never_revised_by_later_tokens():
    state = RoutingState(policy(), prompt_lens=[4], device=torch.device("cpu"))
    state.feed(one_hot_probs([2, 2, 2, 2]).unsqueeze(0), counts=[4])
    first = [(d.chunk, d.experts) for d in state.decisions[0]]
    for _ in range(6):  # the continuation strongly prefers expert 3
        state.feed(one_hot_probs([3], strength=0.99).view(1, 1, 4), counts=[1])
    decisions = state.finish(0, 10)
    assert [(d.chunk, d.experts) for d in decisions][: len(first)] == first
    assert [d.experts for d in decisions] == [[2], [2], [3]]  # chunk 2 decided from chunk 1 only


def test_min_confidence_gates_a_chunk_to_the_base_model():
    state = RoutingState(policy(min_confidence=0.5), prompt_lens=[4], device=torch.device("cpu"))
    gates = state.feed(one_hot_probs([1, 1, 1, 1], strength=0.4).unsqueeze(0), counts=[4])
    (decision,) = state.finish(0, 4)
    assert decision.used_base_only and decision.experts == [1]
    assert torch.count_nonzero(gates) == 0


def test_rows_of_a_batch_route_independently():
    """Per-row state: padding and a neighbour row do not change a row's gates."""
    alone = RoutingState(policy(top_k=2), prompt_lens=[3], device=torch.device("cpu"))
    probs = one_hot_probs([0, 1, 1])
    g_alone = alone.feed(probs.unsqueeze(0), counts=[3])[0]
    batch = RoutingState(policy(top_k=2), prompt_lens=[3, 5], device=torch.device("cpu"))
    both = torch.stack([torch.cat([torch.full((2, 4), 0.25), probs]), one_hot_probs([3, 3, 2, 2, 2])])
    g_batch = batch.feed(both, counts=[3, 5])
    assert torch.equal(g_batch[0, 2:], g_alone)
    assert torch.count_nonzero(g_batch[0, :2]) == 0  # padding columns carry no gate
    assert batch.finish(0, 3) == alone.finish(0, 3)
