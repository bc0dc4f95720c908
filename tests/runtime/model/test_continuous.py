"""Continuous batching: rows that join a running batch mid-flight, or leave it early, compute
exactly what they compute alone (BEM.md's batch independence, now across joins and leaves)."""

from __future__ import annotations

import pytest
import torch

from .test_generation import mixed_requests, summary


def _drain(batch, events, results, deltas) -> None:
    for ev in events:
        assert ev.error is None, ev.error
        deltas[ev.key] = deltas.get(ev.key, "") + ev.delta
        if ev.result is not None:
            results[ev.key] = ev.result


def run_with_joins(batch, requests, joins: dict[int, list[int]], after_step=None):
    """Step the batch until it empties, admitting requests[i] for i in joins[step] at each
    step; returns (results, streamed text) by request index."""
    results, deltas = {}, {}
    step = 0
    while step in joins or batch:
        if step in joins:
            _drain(batch, batch.admit([(i, requests[i]) for i in joins[step]]), results, deltas)
        _drain(batch, batch.step(), results, deltas)
        step += 1
        if after_step is not None:
            after_step(batch)
    return results, deltas


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("use_bem", [True, False])
def test_rows_joining_mid_flight_equal_the_request_alone(engines, arch, use_bem):
    engine = engines[arch]
    requests = mixed_requests()
    alone = [engine.generate_batch([r], use_bem=use_bem)[0] for r in requests]
    batch = engine.open_batch(use_bem)

    def leaving_trims_the_cache(batch) -> None:
        assert batch.forward is None or batch.forward.mask.shape[1] <= max(
            r.prompt_len + r.out.sampled for r in batch.rows)

    # Row 1 (longest prompt) runs alone for a while, 0 and 3 join at step 3, 2 at step 7.
    results, deltas = run_with_joins(batch, requests, {0: [1], 3: [0, 3], 7: [2]},
                                     leaving_trims_the_cache)
    assert [summary(results[i]) for i in range(4)] == [summary(r) for r in alone]
    assert [deltas[i] for i in range(4)] == [r.text for r in alone]  # streamed text adds up


def test_a_cancelled_row_leaves_at_once_and_the_others_are_unaffected(llama):
    requests = mixed_requests()
    alone = [llama.generate_batch([r])[0] for r in requests]
    batch = llama.open_batch()
    results, deltas = {}, {}
    _drain(batch, batch.admit(list(enumerate(requests))), results, deltas)
    for _ in range(4):
        _drain(batch, batch.step(), results, deltas)
    gone = batch.cancel({2})
    assert [(c.key, c.tokens_not_generated) for c in gone] == [(2, 30 - 5)]
    assert 2 not in {r.key for r in batch.rows}
    while batch:
        _drain(batch, batch.step(), results, deltas)
    assert sorted(results) == [0, 1, 3]
    assert [summary(results[i]) for i in (0, 1, 3)] == [summary(alone[i]) for i in (0, 1, 3)]
    assert batch.cancel({0}) == []  # finished rows are not cancelled twice


def test_prompt_too_long_fails_only_its_row(llama):
    from bem_runtime.model import GenerationRequest, PromptTooLongError, SamplingParams

    batch = llama.open_batch()
    ok = GenerationRequest("short", SamplingParams(max_new_tokens=3, temperature=0.0))
    long = GenerationRequest("the sea shore " * 400, SamplingParams(max_new_tokens=3))
    events = batch.admit([("long", long), ("ok", ok)])
    errors = {ev.key: ev.error for ev in events if ev.error is not None}
    assert list(errors) == ["long"] and isinstance(errors["long"], PromptTooLongError)
    assert [r.key for r in batch.rows] == ["ok"]


def test_decode_steps_append_into_spare_columns_not_a_copy_of_the_cache(llama):
    """DynamicLayer concatenates (copies every row's whole cache) on each step; the batch's
    layers write the new column in place, and adopt the tensors select() or join() put there."""
    requests = mixed_requests()
    batch = llama.open_batch()
    batch.admit([(0, requests[0]), (1, requests[1])])
    batch.step()
    layer = batch.forward.cache.layers[0]
    ptr, width = layer.keys.data_ptr(), layer.keys.shape[-2]
    batch.step()
    assert (layer.keys.data_ptr(), layer.keys.shape[-2]) == (ptr, width + 1)
    batch.admit([(2, requests[2])])  # join: the layer adopts the concatenated tensors
    joined = layer.keys.clone()
    batch.step()
    assert torch.equal(layer.keys[..., :-1, :], joined)


def test_a_leaving_or_joining_row_moves_only_itself_within_the_cache_buffers(llama):
    """A row that leaves is refilled from the tail, a narrower row that joins is written into the
    spare row: neither rebuilds the cache (at 32 rows each rebuild cost about a decode step)."""
    requests = mixed_requests()
    batch = llama.open_batch()
    batch.admit([(i, requests[i]) for i in (0, 1, 2)])
    batch.admit([(3, requests[3])])  # the row buffers grow once, here
    for _ in range(2):
        batch.step()
    layer = batch.forward.cache.layers[0]
    buffer, rows = layer._k.data_ptr(), {r.key: layer.keys[i].clone() for i, r in enumerate(batch.rows)}
    batch.cancel({1})  # a middle row: the last row moves into its slot
    assert [r.key for r in batch.rows] == [0, 3, 2]
    assert layer._k.data_ptr() == buffer
    width = layer.keys.shape[-2]
    for i, r in enumerate(batch.rows):  # the survivors' caches, minus columns nobody attends to
        assert torch.equal(layer.keys[i], rows[r.key][..., -width:, :])
    batch.admit([(1, requests[1])])
    assert layer._k.data_ptr() == buffer and [r.key for r in batch.rows] == [0, 3, 2, 1]


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_a_held_batch_computes_finished_rows_until_the_longest_ends(engines, arch):
    """hold=True is the old static batch (the benchmark's baseline): finished rows stay in the
    forward pass, fed padding, so every step is as wide as the batch; outputs are unchanged."""
    engine = engines[arch]
    requests = mixed_requests()
    alone = [engine.generate_batch([r])[0] for r in requests]
    widths = {}
    for hold in (True, False):
        batch = engine.open_batch(hold=hold)
        results, deltas, widths[hold] = {}, {}, []
        _drain(batch, batch.admit(list(enumerate(requests))), results, deltas)
        while batch:
            widths[hold].append(batch.forward.mask.shape[0])
            _drain(batch, batch.step(), results, deltas)
        assert [summary(results[i]) for i in range(4)] == [summary(r) for r in alone]
        assert [deltas[i] for i in range(4)] == [r.text for r in alone]
    assert widths[True] == [4] * len(widths[True])
    assert len(widths[True]) == len(widths[False]) == max(r.completion_tokens for r in alone) - 1
    assert sum(widths[False]) < sum(widths[True])  # leaving rows is what the hold gives up
