"""Many checkpoints on one base (BEM.md, "Many checkpoints over one base"): a row of a batch that
mixes checkpoints equals the same request alone, identical checkpoints answer alike, different
ones do not, and loading, replacing or unloading never changes a row already running."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from bem_runtime.model import CheckpointError, Engine
from bem_runtime.model.bem import RowGroup, cohort_key
from bem_runtime.model.routing import RoutingState
from bem_runtime.model.toy import write_variant

from .conftest import ARCHS, DEVICE
from .test_continuous import _drain, run_with_joins
from .test_generation import mixed_requests, summary


@pytest.fixture(scope="module")
def variants(toy_dirs, tmp_path_factory):
    """Per arch: a twin of the toy checkpoint, a shuffled one, and a smaller one (3 experts,
    rank 2, one site on layers 2-3, routed at layer 0)."""
    out = {}
    for arch in ARCHS:
        root = tmp_path_factory.mktemp(f"variants-{arch}")
        src = toy_dirs[arch][1]
        twin = root / "twin"
        shutil.copytree(src, twin)
        out[arch] = {
            "twin": twin,
            "shuffled": write_variant(src, root / "shuffled", seed=1),
            "small": write_variant(src, root / "small", seed=2, num_experts=3, rank=2,
                                   sites=[_last_site(src)], layers=[2, 3], router_layer=0),
        }
    return out


def _last_site(bem_dir) -> str:
    return json.loads((bem_dir / "bem_config.json").read_text())["sites"][-1]


@pytest.fixture(scope="module")
def multi(toy_dirs, variants) -> dict[str, Engine]:
    engines = {}
    for arch in ARCHS:
        engine = Engine.load(*toy_dirs[arch], name="start", device=DEVICE, dtype="float32")
        for name, path in variants[arch].items():
            engine.load_checkpoint(name, path)
        engines[arch] = engine
    return engines


def _assign(requests, names):
    return [replace(r, checkpoint=n) if n is not None else replace(r, use_bem=False)
            for r, n in zip(requests, names)]


@pytest.mark.parametrize("arch", ARCHS)
def test_a_batch_mixing_checkpoints_equals_each_request_alone(multi, arch):
    engine = multi[arch]
    requests = _assign(mixed_requests(), ["shuffled", "start", "small", None])
    requests += _assign(mixed_requests()[:2], ["small", "shuffled"])
    alone = [engine.generate_batch([r])[0] for r in requests]
    batched = engine.generate_batch(requests)
    assert [summary(r) for r in batched] == [summary(r) for r in alone]
    assert [r.checkpoint for r in batched] == ["shuffled", "start", "small", None, "small", "shuffled"]
    # Not vacuous: each checkpoint routes over its own experts and answers its own way.
    assert max(e for d in batched[2].routing for e in d.experts) < 3
    ids = engine.encode(mixed_requests()[1].prompt)
    logits = {n: engine.score(ids, 4, checkpoint=n)[0] for n in ("start", "twin", "shuffled", "small")}
    torch.testing.assert_close(logits["twin"], logits["start"], atol=0.0, rtol=0.0)
    for other in ("shuffled", "small"):
        assert (logits[other] - logits["start"]).abs().max().item() > 1e-2, other


@pytest.mark.parametrize("arch", ARCHS)
def test_identical_checkpoints_answer_alike_and_a_bare_row_is_the_base_model(multi, arch):
    engine = multi[arch]
    base = mixed_requests()[1]
    got = engine.generate_batch(_assign([base] * 3, ["start", "twin", None]))
    assert summary(got[0]) == summary(got[1])
    assert got[2].routing == [] and got[2].text == engine.generate_batch([base], use_bem=False)[0].text
    assert got[0].text != got[2].text


@pytest.mark.parametrize("arch", ARCHS)
def test_rows_joining_mid_flight_with_other_checkpoints_equal_the_request_alone(multi, arch):
    engine = multi[arch]
    requests = _assign(mixed_requests(), ["small", "start", "shuffled", "small"])
    alone = [engine.generate_batch([r])[0] for r in requests]
    results, _ = run_with_joins(engine.open_batch(), requests, {0: [1], 2: [0, 3], 5: [2]})
    assert [summary(results[i]) for i in range(4)] == [summary(r) for r in alone]


@pytest.mark.parametrize("arch", ARCHS)
def test_loading_replacing_and_unloading_leave_running_rows_unchanged(toy_dirs, variants, arch):
    engine = Engine.load(*toy_dirs[arch], name="start", device=DEVICE, dtype="float32")
    engine.load_checkpoint("a", variants[arch]["shuffled"])
    engine.load_checkpoint("b", variants[arch]["small"])
    requests = _assign(mixed_requests(), ["a", "b", "start", "a"])
    alone = [engine.generate_batch([r])[0] for r in requests]
    batch = engine.open_batch()
    results, deltas = {}, {}
    _drain(batch, batch.admit(list(enumerate(requests))), results, deltas)
    for _ in range(3):
        _drain(batch, batch.step(), results, deltas)
    engine.load_checkpoint("a", variants[arch]["small"])  # replaced under the running rows
    engine.remove_checkpoint("b")  # unloaded under a running row
    engine.load_checkpoint("c", variants[arch]["twin"])  # a new one arrives
    while batch:
        _drain(batch, batch.step(), results, deltas)
    assert [summary(results[i]) for i in range(4)] == [summary(r) for r in alone]
    # New requests see the new set: 'a' is now the small checkpoint, 'b' is gone.
    again = engine.generate_batch(_assign([mixed_requests()[0]], ["a"]))[0]
    assert max(e for d in again.routing for e in d.experts) < 3
    with pytest.raises(KeyError, match="no checkpoint named 'b'"):
        engine.generate_batch(_assign([mixed_requests()[0]], ["b"]))


def test_a_refused_checkpoint_changes_nothing(toy_dirs, multi, edit_checkpoint):
    engine = multi["llama"]
    before = dict(engine.checkpoints)
    wrapped = set(engine.pool.wrappers)
    bad = edit_checkpoint(tensors=lambda t: t.update({"B.model.layers.3.mlp.down_proj": t["B.model.layers.3.mlp.down_proj"][:, :5]}))
    with pytest.raises(CheckpointError, match=r"B.model.layers.3.mlp.down_proj' has shape \[4, 5, 4\].*needs \[4, 64, 4\]"):
        engine.load_checkpoint("shuffled", bad)
    assert engine.checkpoints == before and set(engine.pool.wrappers) == wrapped
    request = _assign([mixed_requests()[0]], ["shuffled"])
    assert engine.generate_batch(request)[0].text == engine.generate_batch(request)[0].text


@pytest.mark.parametrize("arch", ARCHS)
def test_merged_decode_with_many_checkpoints_equals_the_unmerged_engine(toy_dirs, variants, multi, arch):
    """merge_decode folds a gate only when one checkpoint's rows are alone in the step: a mixed
    batch that thins out to one checkpoint switches to the fold mid-flight, with the same tokens."""
    merged = Engine.load(*toy_dirs[arch], name="start", device=DEVICE, dtype="float32", merge_decode=True)
    for name, path in variants[arch].items():
        merged.load_checkpoint(name, path)
    requests = _assign(mixed_requests(), ["shuffled", "start", "small", "shuffled"])
    got = merged.generate_batch(requests)
    assert [summary(r) for r in got] == [summary(r) for r in multi[arch].generate_batch(requests)]
    assert any(w.w_eff is not None for w in merged.pool.wrappers.values())  # the fold ran


def test_checkpoints_of_one_recipe_share_a_group_each_row_with_its_own_router_and_experts(multi):
    """Same routing policy, rank and sites: one group, one routing state, one router GEMM and one
    bank; a checkpoint whose rows left keeps its block until a join changes the set."""
    engine = multi["llama"]
    start, shuffled, twin = (engine.checkpoint(n) for n in ("start", "shuffled", "twin"))
    assert cohort_key(shuffled) == cohort_key(start) != cohort_key(engine.checkpoint("small"))

    def group(ckpts, which):
        state = RoutingState(start.policy, [3] * len(which), engine.device)
        g = RowGroup(ckpts, state, list(range(len(which))), which)
        g.index(engine.device)
        return g

    g = group([shuffled, twin], [0, 1])
    hidden = torch.randn(2, 3, start.router_weight.shape[1])
    logits = g.logits(hidden)
    for row, ckpt in enumerate((shuffled, twin)):
        want = F.linear(hidden[row], ckpt.router_weight, ckpt.router_bias)
        torch.testing.assert_close(logits[row], want)
    gates = torch.rand(2, 3, start.num_experts)
    blocks = g.scaled(gates).view(2, 3, 2, -1)
    # A row's gate is zero in every other checkpoint's block: it never gets another's experts.
    assert blocks[0, :, 1].abs().sum() == 0 and blocks[1, :, 0].abs().sum() == 0
    torch.testing.assert_close(blocks[1, :, 1], group([twin], [0]).scaled(gates[1:])[0])

    g = group([start, shuffled], [0, 1])
    bank = g.bank()
    site = start.sites[0].name
    assert torch.equal(bank.experts[site].a, torch.cat([start.experts[site].a, shuffled.experts[site].a]))
    g.select([1], [0])  # start's only row leaves: its block stays
    assert g.checkpoints == [start, shuffled] and g.which == [1]
    g.absorb(group([start], [0]))  # a row of start joins again: the same bank
    assert g.checkpoints == [start, shuffled] and g.which == [1, 0] and g.bank() is bank
    g.select([0], [0])
    g.absorb(group([twin], [0]))  # start has no row left and twin joins: start's block goes
    assert g.checkpoints == [shuffled, twin] and g.which == [0, 1] and g.bank() is not bank
    assert len(g.state.next_pos) == 2
