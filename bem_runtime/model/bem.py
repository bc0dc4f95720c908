"""A BEM checkpoint attached to a base model: strict validation, governance, router hook."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from .adapter import BEMLinear, GateHolder
from .config import TENSORS_FILE, BEMConfig, apply_overrides, read_config
from .errors import CheckpointError
from .governance import govern
from .routing import RoutingPolicy, RoutingState
from .sites import Site, find_layers, hidden_size, resolve_sites
from .types import RoutingOverrides


class RoutingDone(Exception):
    """Raised by the router hook to stop a routing-only forward once the gates are known."""


@dataclass
class ForwardPlan:
    """What the router hook needs for the forward in flight."""

    state: RoutingState
    counts: list[int]  # real (non-padding) tokens of each row, right-aligned
    stop_after_routing: bool = False


def expected_shapes(cfg: BEMConfig, sites: list[Site], d_model: int) -> dict[str, tuple[int, ...]]:
    e, r = cfg.num_experts, cfg.rank
    shapes: dict[str, tuple[int, ...]] = {"router.weight": (e, d_model), "router.bias": (e,)}
    for s in sites:
        shapes[f"A.{s.name}"] = (e, r, s.d_in)
        shapes[f"B.{s.name}"] = (e, s.d_out, r)
    return shapes


def check_tensors(tensors: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]]) -> None:
    """Refuse any missing, extra, mis-shaped, non-float or non-finite tensor, naming each one."""
    problems = []
    for name, want in shapes.items():
        t = tensors.get(name)
        if t is None:
            problems.append(f"tensor '{name}' is missing from the checkpoint (the base model needs shape {list(want)})")
        elif tuple(t.shape) != want:
            problems.append(
                f"tensor '{name}' has shape {list(t.shape)} in the checkpoint but the base model needs {list(want)}"
            )
        elif not t.is_floating_point():
            problems.append(f"tensor '{name}' has dtype {t.dtype}; expected a floating-point tensor")
        elif not torch.isfinite(t).all():
            problems.append(f"tensor '{name}' contains NaN or infinite values")
    extra = sorted(set(tensors) - set(shapes))
    if extra:
        problems.append(f"tensors {extra[:5]} match no attached site of the base model (sites/layers disagree)")
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise CheckpointError("BEM checkpoint does not match the base model: " + "; ".join(problems[:5]) + more)


@dataclass
class AttachedBEM:
    config: BEMConfig
    policy: RoutingPolicy
    sites: list[Site]
    router_layer: nn.Module
    router_weight: torch.Tensor  # [E, d_model] float32
    router_bias: torch.Tensor  # [E] float32
    wrappers: dict[str, BEMLinear]
    load_report: dict[str, int]
    holder: GateHolder
    dtype: torch.dtype
    merge_decode: bool = False  # fold a batch-wide gate into the weights for decode steps
    plan: ForwardPlan | None = None
    _hook: object = field(default=None, repr=False)
    _cache: tuple[torch.Tensor, torch.Tensor, bool] | None = field(default=None, repr=False)

    def _parent(self, model: nn.Module, name: str) -> tuple[nn.Module, str]:
        parent, _, child = name.rpartition(".")
        return model.get_submodule(parent), child

    def attach(self, model: nn.Module) -> None:
        for site in self.sites:
            parent, child = self._parent(model, site.name)
            setattr(parent, child, self.wrappers[site.name])
        self._hook = self.router_layer.register_forward_pre_hook(self._route, with_kwargs=True)

    def detach(self, model: nn.Module) -> None:
        """Put the original projections back: the model is then exactly the bare base model."""
        for site in self.sites:
            parent, child = self._parent(model, site.name)
            setattr(parent, child, site.module)
        if self._hook is not None:
            self._hook.remove()  # type: ignore[attr-defined]
            self._hook = None

    @contextlib.contextmanager
    def bare(self, model: nn.Module) -> Iterator[None]:
        self.detach(model)
        try:
            yield
        finally:
            self.attach(model)

    def _route(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        plan = self.plan
        if plan is None:
            self.holder.gate = None
            return
        hidden = args[0] if args else kwargs["hidden_states"]
        logits = F.linear(hidden.float(), self.router_weight, self.router_bias)
        gates = plan.state.feed(self.policy.probabilities(logits), plan.counts)
        if plan.stop_after_routing:
            raise RoutingDone
        if self._cache is None or self._cache[0] is not gates:  # decode steps reuse an unchanged gate
            scaled = (gates * self.config.scale).repeat_interleave(self.config.rank, dim=-1).to(self.dtype)
            self._cache = (gates, scaled, self._merge(scaled, plan))
        _, self.holder.gate, self.holder.merged = self._cache

    def _merge(self, scaled: torch.Tensor, plan: ForwardPlan) -> bool:
        """Fold the gate into the weights when this is a decode step and all fed rows share it."""
        if not self.merge_decode or scaled.shape[1] != 1 or not plan.state.uniform(plan.counts):
            return False
        row = next(i for i, n in enumerate(plan.counts) if n)
        for wrapper in self.wrappers.values():
            wrapper.merge(scaled[row, 0])
        return True


def _router_layer_index(cfg: BEMConfig, sites: list[Site]) -> int:
    first = min(s.layer for s in sites)
    index = first if cfg.router_layer is None else cfg.router_layer
    if index > first:
        raise CheckpointError(
            f"router_layer={index} is after the first attached layer {first}: the router input must be "
            "computed by layers without adapters (set router_layer <= the first attached layer)"
        )
    return index


def load_bem(
    model: nn.Module,
    bem_dir: Path,
    overrides: RoutingOverrides | None,
    *,
    allow_qkv: bool = False,
    merge_decode: bool = False,
) -> AttachedBEM:
    """Validate the checkpoint against the model, apply governance and attach it (all or nothing)."""
    cfg = apply_overrides(read_config(bem_dir), overrides)
    sites = resolve_sites(model, cfg.sites, cfg.layers, allow_qkv=allow_qkv)
    router_index = _router_layer_index(cfg, sites)
    path = bem_dir / TENSORS_FILE
    if not path.is_file():
        raise CheckpointError(f"BEM checkpoint {bem_dir} has no {TENSORS_FILE}")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc
    check_tensors(tensors, expected_shapes(cfg, sites, hidden_size(model)))
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    holder = GateHolder()
    report = {"spectral_clamp": 0, "trust_region": 0}
    wrappers = {}
    for site in sites:
        a = tensors[f"A.{site.name}"].double()
        w_fro = torch.linalg.matrix_norm(site.weight_out_in().detach().double(), ord="fro").item()
        b, n_spec, n_trust = govern(
            site.name, a, tensors[f"B.{site.name}"], cfg.scale, w_fro, cfg.sigma_max, cfg.trust_region
        )
        report["spectral_clamp"] += n_spec
        report["trust_region"] += n_trust
        wrappers[site.name] = BEMLinear(site.module, a.to(device, dtype), b.to(device, dtype), holder)
    policy = RoutingPolicy(
        cfg.num_experts, cfg.chunk_size, cfg.top_k, cfg.hysteresis, cfg.temperature, cfg.min_confidence
    )
    bem = AttachedBEM(
        config=cfg,
        policy=policy,
        sites=sites,
        router_layer=find_layers(model)[1][router_index],
        router_weight=tensors["router.weight"].float().to(device),
        router_bias=tensors["router.bias"].float().to(device),
        wrappers=wrappers,
        load_report=report,
        holder=holder,
        dtype=dtype,
        merge_decode=merge_decode,
    )
    bem.attach(model)
    return bem
