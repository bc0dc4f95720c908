"""The adapter forward at one attached projection: y = W x + b + sum_e g_e (alpha/r) B_e (A_e x).

Many checkpoints share one base model: each projection is wrapped once, and a forward pass
carries, per checkpoint in the batch, which rows use it and their gates. A row only ever gets
the experts of its own checkpoint; a row of no checkpoint (the bare base model) gets none.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class SiteExperts:
    """One checkpoint's experts at one projection, stacked so all E experts run as two GEMMs."""

    a: torch.Tensor  # [E*r, d_in]: row e*r+j is A_e[j]
    b: torch.Tensor  # [E*r, d_out]: row e*r+j is B_e[:, j]

    @classmethod
    def stack(cls, a: torch.Tensor, b: torch.Tensor) -> SiteExperts:
        """From A [E, r, d_in] and B [E, d_out, r]."""
        e, r, d_in = a.shape
        return cls(a.reshape(e * r, d_in).contiguous(), b.permute(0, 2, 1).reshape(e * r, -1).contiguous())

    @property
    def nbytes(self) -> int:
        return self.a.numel() * self.a.element_size() + self.b.numel() * self.b.element_size()


@dataclass(frozen=True)
class ActiveGate:
    """The gate of one checkpoint's rows in the forward in flight."""

    experts: Mapping[str, SiteExperts]  # that checkpoint's experts, by site name
    gate: torch.Tensor  # [n, T, E*r]: alpha/r folded in, each expert's gate repeated over its r rows
    rows: torch.Tensor | None  # the batch rows it applies to (n of them); None: every row, in order


class GateHolder:
    """The gates of the forward in flight, shared by every adapter of the model."""

    def __init__(self) -> None:
        self.active: list[ActiveGate] = []
        self.merged: Mapping[str, SiteExperts] | None = None  # folded into each site's w_eff


class BEMLinear(nn.Module):
    """Wraps a frozen Linear/Conv1D; each checkpoint's E experts run as grouped matmuls."""

    def __init__(self, name: str, base: nn.Module, holder: GateHolder) -> None:
        super().__init__()
        self.name = name
        self.base = base
        self.holder = holder
        self.w_eff: torch.Tensor | None = None  # W + sum_e g_e scale B_e A_e, see merge()

    def weight_out_in(self) -> torch.Tensor:
        return self.base.weight if isinstance(self.base, nn.Linear) else self.base.weight.t()

    def merge(self, experts: SiteExperts, gate: torch.Tensor) -> None:
        """Fold one gate vector [E*r] (scale included) into w_eff = W + B diag(g) A.

        Decode steps whose rows all share a checkpoint and a gate then cost exactly one GEMM with
        w_eff, like the base model; the fold itself costs one pass over W, once per chunk.
        """
        w = self.weight_out_in()
        if self.w_eff is None:
            self.w_eff = torch.empty(w.shape, dtype=w.dtype, device=w.device)
        torch.addmm(w, (experts.b * gate[:, None]).t(), experts.a, out=self.w_eff)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        holder = self.holder
        if holder.merged is not None:
            if self.name in holder.merged:
                return F.linear(x, self.w_eff, self.base.bias)
            return self.base(x)
        y = self.base(x)
        for act in holder.active:
            experts = act.experts.get(self.name)
            if experts is None:  # this checkpoint does not attach here: nothing for its rows
                continue
            if act.rows is None:  # in place into the fresh base output: no extra add
                u = F.linear(x, experts.a).mul_(act.gate)
                y.view(-1, y.shape[-1]).addmm_(u.view(-1, u.shape[-1]), experts.b)
            else:
                u = F.linear(x.index_select(0, act.rows), experts.a).mul_(act.gate)
                y.index_add_(0, act.rows, torch.matmul(u, experts.b))
        return y
