"""Toy assets: offline, loadable by plain transformers, deterministic per seed."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoTokenizer

from bem_runtime.cli import main
from bem_runtime.model import CheckpointError, Engine
from bem_runtime.model.toy import FOREIGN_HIDDEN_SIZE, HIDDEN_SIZE, write_toy_assets

from .conftest import DEVICE


def test_toy_base_loads_with_plain_transformers(toy_dirs):
    base, bem = toy_dirs["gpt2"]
    tok = AutoTokenizer.from_pretrained(base, local_files_only=True)
    text = "Sea shells, 42 and ünïcödé!"
    assert tok.decode(tok(text).input_ids, skip_special_tokens=True) == text
    assert AutoConfig.from_pretrained(base, local_files_only=True).model_type == "gpt2"
    cfg = json.loads((bem / "bem_config.json").read_text())
    assert cfg["sites"] == ["attn.c_proj", "mlp.c_proj"] and cfg["version"] == 1


def test_toy_assets_are_deterministic_per_seed(tmp_path):
    first = load_file(str(write_toy_assets(tmp_path / "a", seed=3)[1] / "experts.safetensors"))
    again = load_file(str(write_toy_assets(tmp_path / "b", seed=3)[1] / "experts.safetensors"))
    other = load_file(str(write_toy_assets(tmp_path / "c", seed=4)[1] / "experts.safetensors"))
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["router.weight"], other["router.weight"])
    # B is not zero: the experts change the model
    assert all(first[k].abs().max() > 0 for k in first if k.startswith("B."))


def test_unknown_arch_is_refused(tmp_path):
    with pytest.raises(ValueError, match="arch must be 'llama' or 'gpt2'"):
        write_toy_assets(tmp_path, arch="mamba")


def test_make_toy_writes_variants_the_base_serves_and_a_foreign_one_it_refuses(tmp_path, capsys):
    """The layout of the image with the toy model (docker/toy-model.Dockerfile): three more
    checkpoints of the same base that route differently, and one for another base whose load
    names a tensor and both shapes (the runtime answers it with 422)."""
    assert main(["make-toy", "--out", str(tmp_path), "--variants", "alpha", "beta", "gamma",
                 "--foreign"]) == 0
    assert "checkpoints/gamma" in capsys.readouterr().out
    engine = Engine.load(tmp_path / "base", tmp_path / "bem", name="toy", device=DEVICE,
                         dtype="float32")
    names = ["alpha", "beta", "gamma"]
    for name in names:
        engine.load_checkpoint(name, tmp_path / "checkpoints" / name)
    prompt = "The quick brown fox jumps over the lazy dog"
    routes = {n: [tuple(d.experts) for d in engine.route(prompt, n)] for n in ["toy", *names]}
    assert len(set(map(tuple, routes.values()))) == 4, routes  # each routes its own way
    with pytest.raises(CheckpointError) as refused:
        engine.load_checkpoint("foreign", tmp_path / "foreign" / "bem")
    assert (f"tensor 'router.weight' has shape [4, {FOREIGN_HIDDEN_SIZE}] in the checkpoint but "
            f"the base model needs [4, {HIDDEN_SIZE}]") in str(refused.value)


def test_make_toy_refuses_a_variant_name_that_cannot_be_served(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["make-toy", "--out", str(tmp_path), "--variants", "alpha", "Bad_Name"])
    assert exited.value.code == 2
    assert "'Bad_Name' is not a DNS-1123 label" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before anything was written


def _words(text: str) -> list[str]:
    return [w.strip(".,;:!?'\"()[]{}") for w in text.split()]


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_the_toy_answers_with_words_of_its_bundled_text(engines, arch):
    """A demo answer a person can read: words, not random bytes or U+FFFD, with BEM on."""
    from bem_runtime.model import GenerationRequest, SamplingParams
    from bem_runtime.model.toy import _TEXT

    known = set(_words(_TEXT))
    for prompt, params in [("The quick brown", SamplingParams(max_new_tokens=30, temperature=0.0)),
                           ("Kubernetes", SamplingParams(max_new_tokens=30, temperature=0.5, seed=1))]:
        text = engines[arch].generate_batch([GenerationRequest(prompt, params)])[0].text
        words = [w for w in _words(text) if w]
        assert "\ufffd" not in text and len(words) >= 4, text
        assert sum(w in known for w in words) >= 0.6 * len(words), text
