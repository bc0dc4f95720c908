"""BEM checkpoints over one base model: strict validation and governance at load (Checkpoint),
and the pool that wraps the base model's projections once for all checkpoints and routes each
row of a forward with its own checkpoint's router (BEMPool)."""

from __future__ import annotations

import functools
import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from torch import nn

from .adapter import ActiveGate, BEMLinear, GateHolder, SiteExperts
from .config import CONFIG_FILE, TENSORS_FILE, BEMConfig, apply_overrides, read_config
from .errors import CheckpointError
from .governance import govern
from .routing import RoutingPolicy, RoutingState
from .sites import Site, find_layers, hidden_size, resolve_sites
from .types import RoutingOverrides


class RoutingDone(Exception):
    """Raised by the router hook to stop a routing-only forward once the gates are known."""


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


def _router_layer_index(cfg: BEMConfig, sites: list[Site]) -> int:
    first = min(s.layer for s in sites)
    index = first if cfg.router_layer is None else cfg.router_layer
    if index > first:
        raise CheckpointError(
            f"router_layer={index} is after the first attached layer {first}: the router input must be "
            "computed by layers without adapters (set router_layer <= the first attached layer)"
        )
    return index



@dataclass(eq=False)
class Checkpoint:
    """One loaded BEM checkpoint: validated against the base, governed, not yet in any batch.

    Compared by identity: a checkpoint replaced under the same name is another object, and the
    rows still running on the old one keep it (and its tensors) alive until they finish."""

    name: str
    path: Path
    config: BEMConfig
    policy: RoutingPolicy
    sites: list[Site]
    router_index: int
    router_weight: torch.Tensor  # [E, d_model] float32
    router_bias: torch.Tensor  # [E] float32
    experts: dict[str, SiteExperts]  # by site name
    load_report: dict[str, int]
    digest: str  # sha256 over the config and tensor files
    dtype: torch.dtype
    loaded_at: float = field(default_factory=time.time)

    @property
    def num_experts(self) -> int:
        return self.config.num_experts

    @property
    def nbytes(self) -> int:
        """Device memory the checkpoint adds to the base model."""
        router = sum(t.numel() * t.element_size() for t in (self.router_weight, self.router_bias))
        return router + sum(e.nbytes for e in self.experts.values())


def read_checkpoint(
    model: nn.Module,
    bem_dir: Path,
    overrides: RoutingOverrides | None,
    *,
    name: str = "bem",
    allow_qkv: bool = False,
) -> Checkpoint:
    """Validate a checkpoint against the model and apply governance; the model is not touched."""
    try:
        return _read_checkpoint(model, bem_dir, overrides, name, allow_qkv)
    except OSError as exc:  # a name too long, a directory not readable, ...
        raise CheckpointError(f"cannot read BEM checkpoint {bem_dir}: {exc.strerror or exc}") from None


def _read_checkpoint(
    model: nn.Module, bem_dir: Path, overrides: RoutingOverrides | None, name: str, allow_qkv: bool
) -> Checkpoint:
    cfg = apply_overrides(read_config(bem_dir), overrides)
    sites = resolve_sites(model, cfg.sites, cfg.layers, allow_qkv=allow_qkv)
    router_index = _router_layer_index(cfg, sites)
    path = bem_dir / TENSORS_FILE
    if not path.exists() or path.is_dir():  # a pipe is fine (tests hold a load open with one)
        raise CheckpointError(f"BEM checkpoint {bem_dir} has no {TENSORS_FILE}")
    try:
        raw = path.read_bytes()
        tensors = load_tensors(raw)
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc
    digest = hashlib.sha256((bem_dir / CONFIG_FILE).read_bytes() + b"\0" + raw).hexdigest()
    check_tensors(tensors, expected_shapes(cfg, sites, hidden_size(model)))
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    report = {"spectral_clamp": 0, "trust_region": 0}
    experts = {}
    for site in sites:
        a = tensors[f"A.{site.name}"].double()
        w_fro = torch.linalg.matrix_norm(site.weight_out_in().detach().double(), ord="fro").item()
        b, n_spec, n_trust = govern(
            site.name, a, tensors[f"B.{site.name}"], cfg.scale, w_fro, cfg.sigma_max, cfg.trust_region
        )
        report["spectral_clamp"] += n_spec
        report["trust_region"] += n_trust
        experts[site.name] = SiteExperts.stack(a.to(device, dtype), b.to(device, dtype))
    policy = RoutingPolicy(
        cfg.num_experts, cfg.chunk_size, cfg.top_k, cfg.hysteresis, cfg.temperature, cfg.min_confidence
    )
    return Checkpoint(
        name=name,
        path=bem_dir,
        config=cfg,
        policy=policy,
        sites=sites,
        router_index=router_index,
        router_weight=tensors["router.weight"].float().to(device),
        router_bias=tensors["router.bias"].float().to(device),
        experts=experts,
        load_report=report,
        digest=digest,
        dtype=dtype,
    )


def cohort_key(ckpt: Checkpoint) -> tuple:
    """Checkpoints with the same key route alike (router layer, policy) and gate alike (rank,
    scale, sites): their rows can share one routing state, one router GEMM and one gate."""
    cfg = ckpt.config
    return ckpt.router_index, ckpt.policy, cfg.rank, cfg.scale, tuple(s.name for s in ckpt.sites)


@dataclass(frozen=True)
class Bank:
    """Several checkpoints' routers and experts side by side, one block each, in group order."""

    router_weight: torch.Tensor  # [G*E, d_model]
    router_bias: torch.Tensor  # [G*E]
    experts: dict[str, SiteExperts]

    @classmethod
    def of(cls, ckpts: list[Checkpoint]) -> Bank:
        return cls(
            torch.cat([c.router_weight for c in ckpts]),
            torch.cat([c.router_bias for c in ckpts]),
            {site: SiteExperts.concat([c.experts[site] for c in ckpts]) for site in ckpts[0].experts},
        )


@dataclass(eq=False)
class RowGroup:
    """The rows of one batch whose checkpoints share a cohort_key (usually one checkpoint; many
    checkpoints of one recipe form one group), with one routing state (row i of the state is
    batch row members[i], and uses checkpoints[which[i]]'s router and experts).

    A checkpoint whose rows have all left stays in `checkpoints` (its gate block is zero) until a
    join changes the set, so a checkpoint whose row leaves and whose next request joins does
    not rebuild the bank."""

    checkpoints: list[Checkpoint]
    state: RoutingState
    members: list[int]
    which: list[int] = field(default_factory=list)  # empty: every member uses checkpoints[0]
    rows: torch.Tensor | None = None  # members on the device; None when they are every row in order
    _which: torch.Tensor | None = field(default=None, repr=False)  # which, on the device
    _bank: tuple[tuple[Checkpoint, ...], Bank] | None = field(default=None, repr=False)
    _scaled: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.which = self.which or [0] * len(self.members)

    @property
    def lead(self) -> Checkpoint:
        """The checkpoint whose config stands for the group's (cohort_key is the same for all)."""
        return self.checkpoints[0]

    def index(self, device: torch.device) -> None:
        """Put the members' rows and checkpoint indices on the device (after a change)."""
        self._which = None if len(self.checkpoints) == 1 else torch.tensor(self.which, device=device)

    def bank(self) -> Bank | None:
        """The group's checkpoints side by side (None for a group of one checkpoint)."""
        if len(self.checkpoints) == 1:
            return None
        key = tuple(self.checkpoints)
        if self._bank is None or len(self._bank[0]) != len(key) or any(a is not b for a, b in zip(self._bank[0], key)):
            self._bank = (key, Bank.of(self.checkpoints))
        return self._bank[1]

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Router logits [n, T, E] of the members' hidden states [n, T, d], each row by its own
        checkpoint's router (one GEMM for the group, then each row's own block)."""
        bank = self.bank()
        if bank is None:
            return F.linear(hidden.float(), self.lead.router_weight, self.lead.router_bias)
        n, t, e = hidden.shape[0], hidden.shape[1], self.lead.num_experts
        logits = F.linear(hidden.float(), bank.router_weight, bank.router_bias).view(n, t, -1, e)
        return logits[torch.arange(n, device=logits.device), :, self._which]

    def experts(self) -> dict[str, SiteExperts]:
        bank = self.bank()
        return self.lead.experts if bank is None else bank.experts

    def scaled(self, gates: torch.Tensor) -> torch.Tensor:
        """[n, T, E] gates -> [n, T, E*r] with alpha/r folded in, each row's in its checkpoint's
        block of [n, T, G*E*r] when the group has several; decode steps reuse an unchanged gate."""
        if self._scaled is None or self._scaled[0] is not gates or self._scaled[1] is not self._which:
            cfg = self.lead.config
            scaled = (gates * cfg.scale).repeat_interleave(cfg.rank, dim=-1).to(self.lead.dtype)
            if self._which is not None:
                n, t, width = scaled.shape
                dense = scaled.new_zeros((n, t, len(self.checkpoints), width))
                dense[torch.arange(n, device=dense.device), :, self._which] = scaled
                scaled = dense.view(n, t, -1)
            self._scaled = (gates, self._which, scaled)
        return self._scaled[2]

    def select(self, local: list[int], members: list[int]) -> None:
        """Keep the members at these local indices, renumbered to `members`."""
        if len(local) < len(self.members):
            self.state.select(local)
            self.which = [self.which[i] for i in local]
        self.members = members

    def absorb(self, other: RowGroup) -> None:
        """Append another group's rows (same cohort_key); checkpoints with no row left make room
        for the other's, and the bank is rebuilt only when the set changes."""
        live = {id(self.checkpoints[w]) for w in self.which} | {id(c) for c in other.checkpoints}
        kept = [c for c in self.checkpoints if id(c) in live]
        known = {id(c) for c in kept}
        merged = kept + [c for c in other.checkpoints if id(c) not in known]
        slot = {id(c): i for i, c in enumerate(merged)}
        self.which = [slot[id(self.checkpoints[w])] for w in self.which]
        self.which += [slot[id(other.checkpoints[w])] for w in other.which]
        self.checkpoints = merged
        self.state.join(other.state)
        self.members = self.members + other.members


@dataclass
class ForwardPlan:
    """What the router hooks need for the forward in flight."""

    groups: list[RowGroup]
    counts: list[int]  # real (non-padding) tokens of each batch row, right-aligned
    stop_after_routing: bool = False
    routed: int = 0


class BEMPool:
    """The base model's projections, each wrapped once for every checkpoint that attaches there,
    and a router hook on each layer some checkpoint routes at. A forward with no plan (or a row
    in no group) runs the bare base model."""

    def __init__(self, model: nn.Module, *, merge_decode: bool = False) -> None:
        self.model = model
        self.holder = GateHolder()
        self.wrappers: dict[str, BEMLinear] = {}
        self.merge_decode = merge_decode  # fold a decode step's shared gate into the weights
        self.plan: ForwardPlan | None = None
        self._hooks: dict[int, object] = {}
        self._merged: torch.Tensor | None = None  # the scaled gate the wrappers' w_eff hold

    def install(self, ckpt: Checkpoint) -> None:
        """Wrap the checkpoint's sites and hook its router layer (what is there already stays)."""
        for site in ckpt.sites:
            if site.name not in self.wrappers:
                parent, _, child = site.name.rpartition(".")
                wrapper = BEMLinear(site.name, site.module, self.holder)
                setattr(self.model.get_submodule(parent), child, wrapper)
                self.wrappers[site.name] = wrapper
        if ckpt.router_index not in self._hooks:
            layer = find_layers(self.model)[1][ckpt.router_index]
            hook = functools.partial(self._route, ckpt.router_index)
            self._hooks[ckpt.router_index] = layer.register_forward_pre_hook(hook, with_kwargs=True)

    def begin(self, plan: ForwardPlan | None) -> None:
        self.plan = plan
        self.holder.reset()

    def end(self) -> None:
        self.begin(None)

    def _route(self, index: int, module: nn.Module, args: tuple, kwargs: dict) -> None:
        plan = self.plan
        if plan is None:
            return
        hidden = args[0] if args else kwargs["hidden_states"]
        for group in plan.groups:
            if group.lead.router_index != index:
                continue
            h = hidden if group.rows is None else hidden.index_select(0, group.rows)
            counts = [plan.counts[m] for m in group.members]
            gates = group.state.feed(group.lead.policy.probabilities(group.logits(h)), counts)
            plan.routed += 1
            if plan.stop_after_routing:
                if plan.routed == len(plan.groups):
                    raise RoutingDone
                continue
            scaled = group.scaled(gates)
            if self._can_merge(plan, group, scaled, counts):
                self.holder.merged = group.lead.experts
                continue
            self.holder.active.append(ActiveGate(group.experts(), scaled, group.rows))

    def _can_merge(self, plan: ForwardPlan, group: RowGroup, scaled: torch.Tensor, counts: list[int]) -> bool:
        """Fold the gate into the weights when this is a decode step of one checkpoint whose fed
        rows all share one gate (the fold is redone only when that gate changes)."""
        if not self.merge_decode or len(plan.groups) != 1 or group.rows is not None or len(group.checkpoints) > 1:
            return False
        if scaled.shape[1] != 1 or not group.state.uniform(counts):
            return False
        if self._merged is not scaled:
            row = next(i for i, n in enumerate(counts) if n)
            for name, experts in group.lead.experts.items():
                self.wrappers[name].merge(experts, scaled[row, 0])
            self._merged = scaled
        return True
