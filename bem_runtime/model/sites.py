"""Where adapters attach in a Hugging Face causal LM: decoder layers and projection modules."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from .adapter import BEMLinear
from .errors import CheckpointError

# Suffixes that name query/key/value projections (fused or not). Adapting them changes what
# the KV cache holds, so they need an explicit opt-in.
QKV_NAMES = ("q_proj", "k_proj", "v_proj", "c_attn", "qkv_proj", "query_key_value", "Wqkv", "query", "key", "value")


@dataclass(frozen=True)
class Site:
    name: str  # qualified module name in the causal LM, e.g. model.layers.3.self_attn.o_proj
    layer: int
    module: nn.Module  # nn.Linear or transformers Conv1D
    d_in: int
    d_out: int

    def weight_out_in(self) -> torch.Tensor:
        """The weight as [d_out, d_in] whatever the module type (Conv1D stores it transposed)."""
        w = self.module.weight
        return w.t() if isinstance(self.module, Conv1D) else w


def find_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The decoder-layer list: the ModuleList whose length equals num_hidden_layers."""
    n = getattr(model.config, "num_hidden_layers", None)
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n and name.split(".")[-1] in ("layers", "h", "blocks"):
            return name, module
    raise CheckpointError(
        f"cannot find the decoder layers of {type(model).__name__} (expected a ModuleList of {n} layers "
        "named 'layers' or 'h'); this architecture is not supported"
    )


def is_qkv(site: str) -> bool:
    return site.split(".")[-1] in QKV_NAMES


def _dims(module: nn.Module, name: str) -> tuple[int, int]:
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if isinstance(module, Conv1D):
        return module.weight.shape[0], module.weight.shape[1]
    raise CheckpointError(f"module '{name}' is a {type(module).__name__}; adapters attach only to Linear or Conv1D")


def resolve_sites(
    model: nn.Module, sites: tuple[str, ...], layers: tuple[int, ...] | str, *, allow_qkv: bool
) -> list[Site]:
    """Every (layer, site suffix) pair must exist; a missing one is an error, never skipped."""
    refused = [s for s in sites if is_qkv(s)]
    if refused and not allow_qkv:
        raise CheckpointError(
            f"sites {refused} adapt query/key/value projections, which changes what the KV cache holds; "
            "attach output projections only (o_proj/down_proj, attn.c_proj/mlp.c_proj) or allow QKV explicitly"
        )
    prefix, layer_list = find_layers(model)
    n_layers = len(layer_list)
    indices = list(range(n_layers)) if layers == "all" else list(layers)
    bad = [i for i in indices if i >= n_layers]
    if bad:
        raise CheckpointError(f"layers {bad} do not exist: the base model has {n_layers} layers (0..{n_layers - 1})")
    found: list[Site] = []
    for i in indices:
        layer_modules = dict(layer_list[i].named_modules())
        for suffix in sites:
            module = layer_modules.get(suffix)
            if isinstance(module, BEMLinear):  # wrapped for another checkpoint: the same projection
                module = module.base
            name = f"{prefix}.{i}.{suffix}"
            if module is None:
                linear = sorted(k for k, m in layer_modules.items() if isinstance(m, (nn.Linear, Conv1D)))
                raise CheckpointError(f"site '{suffix}' not found in layer {i} ('{name}'); linear modules there: {linear}")
            d_in, d_out = _dims(module, name)
            found.append(Site(name=name, layer=i, module=module, d_in=d_in, d_out=d_out))
    return found


def hidden_size(model: nn.Module) -> int:
    size = getattr(model.config, "hidden_size", None)
    if not isinstance(size, int):
        raise CheckpointError(f"base config of {type(model).__name__} has no integer hidden_size")
    return size
