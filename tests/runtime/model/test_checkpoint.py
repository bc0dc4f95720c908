"""Strict checkpoint validation: a mismatch is refused, naming the tensor and both shapes."""

from __future__ import annotations

import re

import pytest
import torch
from transformers import AutoModelForCausalLM

from bem_runtime.model import CheckpointError, RoutingOverrides
from bem_runtime.model.adapter import BEMLinear
from bem_runtime.model.checkpoint import read_checkpoint

O_PROJ = "model.layers.2.self_attn.o_proj"


def test_wrong_input_dim_names_the_tensor_and_both_shapes(load_engine, edit_checkpoint):
    bad = edit_checkpoint(tensors=lambda t: t.__setitem__(f"A.{O_PROJ}", torch.randn(4, 4, 48)))
    with pytest.raises(CheckpointError) as err:
        load_engine(bem_dir=bad)
    assert f"'A.{O_PROJ}' has shape [4, 4, 48] in the checkpoint but the base model needs [4, 4, 64]" in str(err.value)


def test_wrong_rank_in_b_names_the_tensor(load_engine, edit_checkpoint):
    bad = edit_checkpoint(tensors=lambda t: t.__setitem__(f"B.{O_PROJ}", torch.randn(4, 64, 3)))
    with pytest.raises(CheckpointError, match=re.escape(f"'B.{O_PROJ}' has shape [4, 64, 3]")):
        load_engine(bem_dir=bad)


def test_wrong_number_of_experts_is_refused(load_engine, edit_checkpoint):
    bad = edit_checkpoint(config=lambda c: c.update(num_experts=5))
    with pytest.raises(CheckpointError) as err:
        load_engine(bem_dir=bad)
    assert "'router.weight' has shape [4, 64] in the checkpoint but the base model needs [5, 64]" in str(err.value)


def test_missing_tensor_is_named(load_engine, edit_checkpoint):
    bad = edit_checkpoint(tensors=lambda t: t.pop(f"B.{O_PROJ}"))
    with pytest.raises(CheckpointError, match=re.escape(f"'B.{O_PROJ}' is missing from the checkpoint")):
        load_engine(bem_dir=bad)


def test_extra_tensor_for_an_unattached_layer_is_refused(load_engine, edit_checkpoint):
    extra = "A.model.layers.0.self_attn.o_proj"
    bad = edit_checkpoint(tensors=lambda t: t.__setitem__(extra, torch.randn(4, 4, 64)))
    with pytest.raises(CheckpointError, match=re.escape(extra)):
        load_engine(bem_dir=bad)


def test_missing_site_in_the_base_is_refused(load_engine, edit_checkpoint):
    bad = edit_checkpoint(config=lambda c: c.update(sites=["self_attn.o_proj", "mlp.out_proj"]))
    with pytest.raises(CheckpointError, match="site 'mlp.out_proj' not found in layer 1"):
        load_engine(bem_dir=bad)


def test_llama_checkpoint_on_a_gpt2_base_is_refused(toy_dirs):
    from bem_runtime.model import Engine

    with pytest.raises(CheckpointError, match="site 'self_attn.o_proj' not found"):
        Engine.load(toy_dirs["gpt2"][0], toy_dirs["llama"][1], device="cpu")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.update(version=2), "unsupported format version 2"),
        (lambda c: c.update(layers=[1, 9]), r"layers \[9\] do not exist"),
        (lambda c: c.update(router_layer=3), "router_layer=3 is after the first attached layer 1"),
        (lambda c: c["routing"].update(top_k=5), "top_k=5 exceeds num_experts=4"),
        (lambda c: c.pop("rank"), "missing required field 'rank'"),
        (lambda c: c["routing"].update(chunk_size=0), "'routing.chunk_size' must be an integer >= 1"),
    ],
)
def test_bad_config_is_refused_with_the_field_named(load_engine, edit_checkpoint, change, message):
    with pytest.raises(CheckpointError, match=message):
        load_engine(bem_dir=edit_checkpoint(config=change))


def test_non_finite_expert_weights_are_refused(load_engine, edit_checkpoint):
    def poison(t):
        t[f"B.{O_PROJ}"][0, 0, 0] = float("nan")

    with pytest.raises(CheckpointError, match=re.escape(f"'B.{O_PROJ}' contains NaN")):
        load_engine(bem_dir=edit_checkpoint(tensors=poison))


def test_qkv_sites_are_refused_unless_allowed(toy_dirs, edit_checkpoint):
    from bem_runtime.model import Engine

    def add_q(t):
        for i in (1, 2, 3):
            t[f"A.model.layers.{i}.self_attn.q_proj"] = torch.randn(4, 4, 64) * 0.1
            t[f"B.model.layers.{i}.self_attn.q_proj"] = torch.randn(4, 64, 4) * 0.01

    bad = edit_checkpoint(config=lambda c: c["sites"].append("self_attn.q_proj"), tensors=add_q)
    with pytest.raises(CheckpointError, match="query/key/value"):
        Engine.load(toy_dirs["llama"][0], bad, device="cpu")
    allowed = Engine.load(toy_dirs["llama"][0], bad, device="cpu", allow_qkv=True)
    assert len(allowed.bem.sites) == 9


def test_a_refused_checkpoint_leaves_the_model_untouched(toy_dirs, edit_checkpoint):
    """Validation happens before anything is attached: never a silent partial attach."""
    model = AutoModelForCausalLM.from_pretrained(toy_dirs["llama"][0], local_files_only=True)
    bad = edit_checkpoint(tensors=lambda t: t.pop("B.model.layers.3.mlp.down_proj"))
    with pytest.raises(CheckpointError):
        read_checkpoint(model, bad, None)
    assert not any(isinstance(m, BEMLinear) for m in model.modules())
    assert not model.model.layers[1]._forward_pre_hooks


def test_invalid_override_is_refused(load_engine):
    with pytest.raises(ValueError, match="top_k=7 exceeds num_experts=4"):
        load_engine(overrides=RoutingOverrides(top_k=7))


def test_missing_directories_say_what_is_missing(toy_dirs, tmp_path):
    from bem_runtime.model import Engine

    with pytest.raises(CheckpointError, match="has no bem_config.json"):
        Engine.load(toy_dirs["llama"][0], tmp_path, device="cpu")
    with pytest.raises(CheckpointError, match="has no config.json"):
        Engine.load(tmp_path, toy_dirs["llama"][1], device="cpu")
