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

    @classmethod
    def concat(cls, experts: list[SiteExperts]) -> SiteExperts:
        """Several checkpoints' experts side by side (one column block each, in order)."""
        return cls(torch.cat([e.a for e in experts]), torch.cat([e.b for e in experts]))

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
        self._dense: dict[tuple[int, ...], tuple[list[ActiveGate], torch.Tensor]] = {}

    def reset(self) -> None:
        self.active, self.merged, self._dense = [], None, {}

    def dense_gate(self, actives: list[ActiveGate], batch_shape: torch.Size) -> torch.Tensor:
        """[B, T, sum of E*r]: each row's gate in its own checkpoint's column block, zeros in
        every other block (and for rows of no checkpoint here). Built once per forward for each
        set of checkpoints that attach together, which most sites share."""
        key = tuple(id(a) for a in actives)
        hit = self._dense.get(key)
        if hit is None:
            gate = actives[0].gate.new_zeros((*batch_shape, sum(a.gate.shape[-1] for a in actives)))
            offset = 0
            for act in actives:
                block = gate[..., offset : offset + act.gate.shape[-1]]
                if act.rows is None:
                    block.copy_(act.gate)
                else:
                    block.index_copy_(0, act.rows, act.gate)
                offset += act.gate.shape[-1]
            hit = self._dense[key] = (actives, gate)  # the list keeps the ids in the key unique
        return hit[1]


class BEMLinear(nn.Module):
    """Wraps a frozen Linear/Conv1D; each checkpoint's E experts run as grouped matmuls."""

    def __init__(self, name: str, base: nn.Module, holder: GateHolder) -> None:
        super().__init__()
        self.name = name
        self.base = base
        self.holder = holder
        self.w_eff: torch.Tensor | None = None  # W + sum_e g_e scale B_e A_e, see merge()
        self._bank: tuple[tuple[SiteExperts, ...], torch.Tensor, torch.Tensor] | None = None

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
        here = [act for act in holder.active if self.name in act.experts]
        if not here:  # no row's checkpoint attaches here: the base projection alone
            return y
        if len(here) == 1 and here[0].rows is None:  # every row, one checkpoint
            experts, gate = here[0].experts[self.name], here[0].gate
            a, b = experts.a, experts.b
        else:
            # Rows of several checkpoints: their experts side by side, one column block each,
            # and a gate that is zero outside a row's own block, so two GEMMs serve them all
            # and a row never gets another checkpoint's experts.
            a, b = self._bank_of([act.experts[self.name] for act in here])
            gate = holder.dense_gate(here, x.shape[:-1])
        u = F.linear(x, a).mul_(gate)
        # In place into the fresh base output: one GEMM, no extra add.
        y.view(-1, y.shape[-1]).addmm_(u.view(-1, u.shape[-1]), b)
        return y

    def _bank_of(self, experts: list[SiteExperts]) -> tuple[torch.Tensor, torch.Tensor]:
        """The checkpoints' experts concatenated; kept while the same checkpoints share a batch."""
        bank = self._bank
        if bank is None or len(bank[0]) != len(experts) or any(p is not q for p, q in zip(bank[0], experts)):
            joined = SiteExperts.concat(experts)
            bank = self._bank = (tuple(experts), joined.a, joined.b)
        return bank[1], bank[2]
