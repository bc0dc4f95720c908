"""Tiny base model, tokenizer and matching BEM checkpoint, written offline in seconds.

The base model is fitted for about a second to the bundled text, so the demo answers with
readable words instead of random bytes; the experts stay random (they only need to matter)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from .config import CONFIG_FILE, FORMAT_VERSION, TENSORS_FILE
from .sites import resolve_sites

_TEXT = """\
The quick brown fox jumps over the lazy dog. A frozen base model carries a few low-rank experts.
Each chunk of tokens picks its experts once, from tokens that are already known, and keeps them.
Kubernetes runs the serving pods; the operator keeps their deployment, service and autoscaler.
Numbers 0 1 2 3 4 5 6 7 8 9 and symbols + - * / = ( ) [ ] { } < > , ; : ! ? ' " @ # % & _ ~
She sells sea shells by the sea shore. Peter Piper picked a peck of pickled peppers.
"""
SPECIALS = ["<s>", "</s>", "<pad>"]
SITES = {"llama": ["self_attn.o_proj", "mlp.down_proj"], "gpt2": ["attn.c_proj", "mlp.c_proj"]}
NUM_LAYERS, NUM_EXPERTS, RANK, ALPHA = 4, 4, 4, 8.0
HIDDEN_SIZE = 64
# The hidden size of the base that a foreign checkpoint (write_foreign) was made for: its
# router and expert tensors then fit no toy base of HIDDEN_SIZE.
FOREIGN_HIDDEN_SIZE = 96
# Next-token fitting on _TEXT: enough for words, short enough for tests that build toys often.
FIT_STEPS, FIT_LR, FIT_WINDOW, FIT_BATCH = 40, 5e-3, 48, 8
# A chat template in the common shape (role headers, then the assistant's turn to answer); the
# markers are plain text to this tokenizer. Jinja, rendered by transformers' apply_chat_template.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
# Expert delta relative to the base weight: visible in the logits, small enough to keep words.
EXPERT_STRENGTH = 0.15


def build_tokenizer(vocab_size: int = 384) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on a built-in text: any string round-trips, no files needed."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator([_TEXT] * 4, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(arch: str, vocab_size: int, hidden_size: int = HIDDEN_SIZE) -> torch.nn.Module:
    special = {"bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2}
    if arch == "llama":
        cfg = LlamaConfig(
            vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
            num_hidden_layers=NUM_LAYERS, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=512, initializer_range=0.1, tie_word_embeddings=False, **special,
        )  # fmt: skip
        return LlamaForCausalLM(cfg)
    if arch == "gpt2":
        cfg = GPT2Config(
            vocab_size=vocab_size, n_embd=hidden_size, n_layer=NUM_LAYERS, n_head=4, n_positions=512,
            initializer_range=0.1, **special,
        )  # fmt: skip
        return GPT2LMHeadModel(cfg)
    raise ValueError(f"arch must be 'llama' or 'gpt2', got {arch!r}")


def fit_to_text(model: torch.nn.Module, tokenizer, steps: int = FIT_STEPS) -> float:
    """Train the base model on windows of _TEXT; returns the last loss. No EOS in the targets,
    so answers run to their max_new_tokens."""
    data = torch.tensor(tokenizer(_TEXT, add_special_tokens=False).input_ids)
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=FIT_LR)
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        starts = torch.randint(0, len(data) - FIT_WINDOW - 1, (FIT_BATCH,), generator=gen).tolist()
        x = torch.stack([data[s : s + FIT_WINDOW] for s in starts])
        y = torch.stack([data[s + 1 : s + FIT_WINDOW + 1] for s in starts])
        logits = model(x).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return float(loss.detach())


def bem_config(arch: str, router_layer: int = 1) -> dict:
    return {
        "version": FORMAT_VERSION,
        "num_experts": NUM_EXPERTS,
        "rank": RANK,
        "alpha": ALPHA,
        "sites": SITES[arch],
        "layers": list(range(router_layer, NUM_LAYERS)),
        "router_layer": router_layer,
        "routing": {"chunk_size": 8, "top_k": 2, "hysteresis": 0.0, "temperature": 1.0},
        "governance": {"sigma_max": 50.0, "trust_region": 2.0},
    }


def build_experts(model: torch.nn.Module, tokenizer, cfg: dict) -> dict[str, torch.Tensor]:
    """Random experts whose deltas are EXPERT_STRENGTH of the base weight (experts matter),
    and a router scaled to the real hidden states (so routing is decisive, not uniform)."""
    sites = resolve_sites(model, tuple(cfg["sites"]), tuple(cfg["layers"]), allow_qkv=False)
    e, r, scale = cfg["num_experts"], cfg["rank"], cfg["alpha"] / cfg["rank"]
    tensors = {}
    for s in sites:
        w_fro = s.weight_out_in().detach().norm().item()
        std_b = EXPERT_STRENGTH * w_fro / (scale * math.sqrt(s.d_out * r))
        tensors[f"A.{s.name}"] = torch.randn(e, r, s.d_in) / math.sqrt(s.d_in)
        tensors[f"B.{s.name}"] = torch.randn(e, s.d_out, r) * std_b
    ids = tokenizer(_TEXT, return_tensors="pt").input_ids
    with torch.no_grad():
        hidden = model(ids, output_hidden_states=True).hidden_states[cfg["router_layer"]]
    d = hidden.shape[-1]
    rms = hidden.pow(2).mean().sqrt().item()
    tensors["router.weight"] = torch.randn(e, d) * (3.0 / (rms * math.sqrt(d)))
    tensors["router.bias"] = torch.zeros(e)
    return tensors


def write_toy_assets(out_dir: Path, arch: str = "llama", seed: int = 0) -> tuple[Path, Path]:
    """Write out_dir/base (HF model + tokenizer) and out_dir/bem (checkpoint); return both paths."""
    out_dir = Path(out_dir)
    base, bem = out_dir / "base", out_dir / "bem"
    tokenizer = build_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(arch, len(tokenizer))
        fit_to_text(model, tokenizer)
        cfg = bem_config(arch)
        tensors = build_experts(model, tokenizer, cfg)
    base.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(base, safe_serialization=True)
    tokenizer.save_pretrained(base)
    return base, _write_checkpoint(bem, cfg, tensors)


def write_foreign(out: Path, arch: str = "llama", seed: int = 0) -> Path:
    """A checkpoint made for another base (hidden size FOREIGN_HIDDEN_SIZE, not HIDDEN_SIZE): the
    toy base refuses it, naming a tensor and both shapes. Only the checkpoint is written."""
    tokenizer = build_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(arch, len(tokenizer), hidden_size=FOREIGN_HIDDEN_SIZE).eval()
        cfg = bem_config(arch)
        tensors = build_experts(model, tokenizer, cfg)
    return _write_checkpoint(Path(out), cfg, tensors)


def _write_checkpoint(out: Path, cfg: dict, tensors: dict[str, torch.Tensor]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_FILE).write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / TENSORS_FILE))
    return out


def write_variant(
    src: Path,
    out: Path,
    seed: int,
    *,
    num_experts: int | None = None,
    rank: int | None = None,
    sites: list[str] | None = None,
    layers: list[int] | None = None,
    router_layer: int | None = None,
) -> Path:
    """Another checkpoint for the same base, derived from `src`: the router's rows are shuffled
    and each expert's B re-signed (by `seed`), so it routes and answers differently with the same
    norms; optionally fewer experts, a lower rank, fewer sites or layers, another router layer.
    For tests and the benchmark of many checkpoints on one base."""
    src, out = Path(src), Path(out)
    cfg = json.loads((src / CONFIG_FILE).read_text(encoding="utf-8"))
    tensors = load_file(str(src / TENSORS_FILE))
    gen = torch.Generator().manual_seed(seed)
    e = num_experts or cfg["num_experts"]
    r = rank or cfg["rank"]
    keep_sites = sites or cfg["sites"]
    keep_layers = layers or cfg["layers"]
    perm = torch.randperm(cfg["num_experts"], generator=gen)
    signs = torch.randint(0, 2, (cfg["num_experts"], 1, 1), generator=gen) * 2 - 1
    new: dict[str, torch.Tensor] = {
        "router.weight": tensors["router.weight"][perm][:e],
        "router.bias": tensors["router.bias"][perm][:e],
    }
    for name, t in tensors.items():
        kind, _, module = name.partition(".")
        if kind not in ("A", "B"):
            continue
        layer = int(re.search(r"\.(\d+)\.", module).group(1))
        if layer not in keep_layers or not any(module.endswith("." + s) for s in keep_sites):
            continue
        new[name] = t[:e, :r] if kind == "A" else (t * signs)[:e, :, :r]
    cfg.update(num_experts=e, rank=r, sites=keep_sites, layers=keep_layers)
    cfg["router_layer"] = cfg["router_layer"] if router_layer is None else router_layer
    cfg["routing"]["top_k"] = min(cfg["routing"]["top_k"], e)
    return _write_checkpoint(out, cfg, new)
