"""BEM.md's central invariant: full-sequence forward == token-by-token decoding with the KV cache."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from bem_runtime.model import RoutingOverrides

from .conftest import ARCHS

# fp32 on CPU: the two paths differ only in matmul shapes and summation order.
ATOL = RTOL = 1e-4


def _sequence(engine, prompt_len: int, total: int, seed: int) -> list[int]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(3, len(engine.tokenizer), (total,), generator=gen).tolist()[:total]


def assert_same_routing(got, want) -> None:
    """Same chunks, spans, experts and base-only flags; gate weights equal up to float noise."""
    assert [(d.chunk, d.start, d.end, d.experts, d.used_base_only) for d in got] == [
        (d.chunk, d.start, d.end, d.experts, d.used_base_only) for d in want
    ]
    for a, b in zip(got, want):
        assert a.weights == pytest.approx(b.weights, abs=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("prompt_len", [1, 3, 8, 13, 21])
def test_full_forward_equals_incremental_decoding(engines, arch, prompt_len):
    engine = engines[arch]
    ids = _sequence(engine, prompt_len, 40, seed=prompt_len)
    full, full_routes = engine.score(ids, prompt_len)
    step, step_routes = engine.score(ids, prompt_len, incremental=True)
    torch.testing.assert_close(step, full, atol=ATOL, rtol=RTOL)
    assert_same_routing(step_routes, full_routes)
    # Every position is covered by exactly one decision, in order.
    assert [(d.start, d.end) for d in full_routes] == [(s, min(s + 8, 40)) for s in range(0, 40, 8)]


@pytest.mark.parametrize("arch", ARCHS)
def test_invariant_is_not_vacuous(engines, arch):
    """The experts change the logits and the routing changes over chunks, so the test above can fail."""
    engine = engines[arch]
    ids = _sequence(engine, 5, 48, seed=7)
    with_bem, routes = engine.score(ids, 5)
    base, _ = engine.score(ids, 5, use_bem=False)
    assert (with_bem - base).abs().max().item() > 1e-2
    assert len({tuple(d.experts) for d in routes}) > 1


@pytest.mark.parametrize("arch", ARCHS)
def test_zero_gates_equal_the_base_model(load_engine, engines, arch):
    """min_confidence=1 forces every chunk to gate 0: the output is the base model's."""
    gated_off = load_engine(arch, RoutingOverrides(min_confidence=1.0))
    ids = _sequence(gated_off, 6, 30, seed=1)
    logits, routes = gated_off.score(ids, 6)
    base, _ = engines[arch].score(ids, 6, use_bem=False)
    assert all(d.used_base_only for d in routes)
    torch.testing.assert_close(logits, base, atol=0.0, rtol=0.0)


@pytest.mark.parametrize("arch", ARCHS)
def test_bare_path_is_the_plain_transformers_model(engines, toy_dirs, arch):
    """use_bem=False detaches every adapter: logits equal a separately loaded transformers model."""
    engine = engines[arch]
    plain = AutoModelForCausalLM.from_pretrained(toy_dirs[arch][0], local_files_only=True).eval()
    ids = _sequence(engine, 4, 24, seed=3)
    ours, _ = engine.score(ids, 4, use_bem=False)
    with torch.inference_mode():
        theirs = plain.to(engine.device)(torch.tensor([ids], device=engine.device)).logits[0].cpu()
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=RTOL)
    # and the adapters are back afterwards
    again, _ = engine.score(ids, 4)
    assert (again - ours).abs().max().item() > 1e-2


def test_route_matches_the_generation_decisions(llama):
    from bem_runtime.model import GenerationRequest, SamplingParams

    prompt = "Each chunk of tokens picks its experts once, from tokens that are already known."
    routed = llama.route(prompt)
    result = llama.generate_batch([GenerationRequest(prompt, SamplingParams(max_new_tokens=12, temperature=0))])[0]
    n = result.prompt_tokens
    assert routed[-1].end == n
    prefix = [d for d in result.routing if d.start < n]
    assert [(d.chunk, d.experts, d.weights) for d in prefix] == [(d.chunk, d.experts, d.weights) for d in routed]
    assert result.routing[-1].end == n + result.completion_tokens


@pytest.mark.parametrize("arch", ARCHS)
def test_merged_decode_keeps_the_invariant(toy_dirs, engines, arch):
    """merge_decode folds the chunk's gate into the weights on decode steps: same logits, same routes."""
    from bem_runtime.model import Engine, GenerationRequest, SamplingParams

    from .conftest import DEVICE

    merged = Engine.load(*toy_dirs[arch], device=DEVICE, dtype="float32", merge_decode=True)
    ids = _sequence(merged, 5, 40, seed=11)
    full, full_routes = engines[arch].score(ids, 5)
    step, step_routes = merged.score(ids, 5, incremental=True)
    assert all(w.w_eff is not None for w in merged.pool.wrappers.values())  # the merged path ran
    torch.testing.assert_close(step, full, atol=ATOL, rtol=RTOL)
    assert_same_routing(step_routes, full_routes)
    requests = [GenerationRequest(p, SamplingParams(max_new_tokens=20, temperature=0.0)) for p in ("Sea", "The fox")]
    assert [r.text for r in merged.generate_batch(requests[:1])] == [
        r.text for r in engines[arch].generate_batch(requests[:1])
    ]
    assert [r.text for r in merged.generate_batch(requests)] == [r.text for r in engines[arch].generate_batch(requests)]
