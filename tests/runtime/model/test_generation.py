"""Batched generation: batch-independence, determinism, stop strings, streaming, failures."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from bem_runtime.model import GenerationRequest, NonFiniteLogitsError, PromptTooLongError, SamplingParams

PROMPTS = [
    "The quick brown fox",
    "A frozen base model carries a few low-rank experts, and each chunk picks its experts once.",
    "Kubernetes",
    "She sells sea shells by the sea shore. Peter Piper picked a peck",
]


def mixed_requests() -> list[GenerationRequest]:
    return [
        GenerationRequest(PROMPTS[0], SamplingParams(max_new_tokens=20, temperature=0.0)),
        GenerationRequest(PROMPTS[1], SamplingParams(max_new_tokens=25, temperature=0.9, seed=11)),
        GenerationRequest(PROMPTS[2], SamplingParams(max_new_tokens=30, temperature=1.2, top_p=0.8, seed=5)),
        GenerationRequest(PROMPTS[3], SamplingParams(max_new_tokens=9, temperature=0.7, seed=2)),
    ]


def summary(result) -> tuple:
    routes = [(d.chunk, d.start, d.end, d.experts, d.used_base_only) for d in result.routing]
    return result.text, result.completion_tokens, result.finish_reason, routes


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_batched_output_equals_the_request_alone(engines, arch):
    engine = engines[arch]
    requests = mixed_requests()
    batched = engine.generate_batch(requests)
    reversed_batch = engine.generate_batch(requests[::-1])[::-1]
    alone = [engine.generate_batch([r])[0] for r in requests]
    assert [summary(r) for r in batched] == [summary(r) for r in alone]
    assert [summary(r) for r in reversed_batch] == [summary(r) for r in alone]
    assert len({r.text for r in batched}) == len(requests)  # not trivially equal outputs


def test_same_seed_same_output_and_different_seed_differs(llama):
    def run(seed):
        req = GenerationRequest(PROMPTS[1], SamplingParams(max_new_tokens=30, temperature=1.0, seed=seed))
        return llama.generate_batch([req])[0].text

    assert run(42) == run(42)
    assert len({run(s) for s in (1, 2, 3)}) > 1


def test_greedy_bare_path_matches_transformers_generate(engines, toy_dirs):
    """The decode loop (cache, positions, argmax) matches transformers' own greedy generation."""
    engine = engines["llama"]
    plain = AutoModelForCausalLM.from_pretrained(toy_dirs["llama"][0], local_files_only=True).eval()
    plain.to(engine.device)
    ids = torch.tensor([engine.encode(PROMPTS[1])], device=engine.device)
    with torch.inference_mode():
        out = plain.generate(ids, max_new_tokens=15, do_sample=False, eos_token_id=None, pad_token_id=2)
    want = engine.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    req = GenerationRequest(PROMPTS[1], SamplingParams(max_new_tokens=15, temperature=0.0))
    got = engine.generate_batch([req], use_bem=False)[0]
    assert got.text == want and got.routing == []


def test_stop_string_truncates_and_streaming_never_leaks_it(llama):
    params = SamplingParams(max_new_tokens=40, temperature=0.0)
    full = llama.generate_batch([GenerationRequest(PROMPTS[0], params)])[0].text
    stop = full[12:15]
    assert stop and full.find(stop) >= 1
    deltas: list[str] = []
    stopped_params = SamplingParams(max_new_tokens=40, temperature=0.0, stop=("never-there", stop))
    result = llama.generate_batch(
        [GenerationRequest(PROMPTS[0], stopped_params)], on_token=lambda i, d: deltas.append(d)
    )[0]
    assert result.text == full[: full.find(stop)]
    assert result.finish_reason == "stop"
    assert "".join(deltas) == result.text
    assert result.completion_tokens < 40


def test_streaming_deltas_concatenate_to_each_result(llama):
    streamed: dict[int, str] = {}
    results = llama.generate_batch(mixed_requests(), on_token=lambda i, d: streamed.update({i: streamed.get(i, "") + d}))
    assert [streamed.get(i, "") for i in range(len(results))] == [r.text for r in results]


def test_length_finish_and_token_counts(llama):
    req = GenerationRequest(PROMPTS[0], SamplingParams(max_new_tokens=7, temperature=0.0))
    result = llama.generate_batch([req])[0]
    assert result.prompt_tokens == llama.count_tokens(PROMPTS[0])
    if result.finish_reason == "length":
        assert result.completion_tokens == 7
    assert set(result.timings) == {"tokenize", "prefill", "decode", "total"}
    assert all(v >= 0 for v in result.timings.values())
    assert result.timings["total"] >= result.timings["prefill"] + result.timings["decode"]


def test_low_confidence_chunks_are_counted(load_engine):
    from bem_runtime.model import RoutingOverrides

    engine = load_engine(overrides=RoutingOverrides(min_confidence=1.0))
    req = GenerationRequest(PROMPTS[1], SamplingParams(max_new_tokens=10, temperature=0.0))
    result = engine.generate_batch([req])[0]
    assert result.safety_events == {"low_confidence": len(result.routing)}
    assert len(result.routing) >= 3


def test_prompt_too_long_is_refused_before_any_work(llama):
    long_prompt = "the sea shore " * 400
    with pytest.raises(PromptTooLongError, match="exceeds the model context of 512 tokens"):
        llama.generate_batch([GenerationRequest(long_prompt, SamplingParams(max_new_tokens=4))])
    with pytest.raises(PromptTooLongError):
        llama.generate_batch([GenerationRequest("short", SamplingParams(max_new_tokens=600))])


def test_non_finite_logits_fail_the_request(load_engine):
    engine = load_engine()
    with torch.no_grad():
        engine.model.lm_head.weight[5, 0] = float("nan")
    with pytest.raises(NonFiniteLogitsError, match=r"requests \[0\]"):
        engine.generate_batch([GenerationRequest(PROMPTS[0], SamplingParams(max_new_tokens=3))])


def test_empty_prompt_uses_the_bos_token(llama):
    result = llama.generate_batch([GenerationRequest("", SamplingParams(max_new_tokens=3, temperature=0.0))])[0]
    assert result.prompt_tokens == 1 and result.completion_tokens >= 1


def test_bad_sampling_params_are_refused():
    for bad in (dict(max_new_tokens=0), dict(temperature=-1.0), dict(top_p=0.0), dict(seed=-3)):
        with pytest.raises(ValueError):
            SamplingParams(**bad)
