"""The pool that wraps the base model's projections once for all resident checkpoints and routes
each row of a forward with its own checkpoint's router (BEMPool), and the groups of rows that
route alike (RowGroup)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .adapter import ActiveGate, BEMLinear, GateHolder, SiteExperts
from .checkpoint import Checkpoint
from .routing import RoutingState
from .sites import find_layers


class RoutingDone(Exception):
    """Raised by the router hook to stop a routing-only forward once the gates are known."""


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
