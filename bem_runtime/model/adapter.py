"""The adapter forward at one attached projection: y = W x + b + sum_e g_e (alpha/r) B_e (A_e x)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GateHolder:
    """The gate of the forward in flight, shared by every adapter of the model.

    `gate` is [B, T, E*r] with alpha/r folded in and each expert's gate repeated over its r rank
    rows, so one elementwise multiply applies gates and scale for all experts at once.
    """

    def __init__(self) -> None:
        self.gate: torch.Tensor | None = None


class BEMLinear(nn.Module):
    """Wraps a frozen Linear/Conv1D; all E experts run as two grouped matmuls (no per-expert loop)."""

    def __init__(self, base: nn.Module, a: torch.Tensor, b: torch.Tensor, holder: GateHolder) -> None:
        super().__init__()
        e, r, d_in = a.shape
        d_out = b.shape[1]
        self.base = base
        # A plain Linear is called functionally: one Python module call less per token and site.
        self.linear = type(base) is nn.Linear
        self.holder = holder
        self.d_out = d_out
        # A_cat [E*r, d_in]: row e*r+j is A_e[j]; B_cat [E*r, d_out]: row e*r+j is B_e[:, j].
        self.register_buffer("a_cat", a.reshape(e * r, d_in).contiguous(), persistent=False)
        self.register_buffer("b_cat", b.permute(0, 2, 1).reshape(e * r, d_out).contiguous(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.base.weight, self.base.bias) if self.linear else self.base(x)
        gate = self.holder.gate
        if gate is None:
            return y
        u = F.linear(x, self.a_cat).mul_(gate)
        # In place into the fresh base output: the low-rank update costs one GEMM, no extra add.
        y.view(-1, self.d_out).addmm_(u.view(-1, u.shape[-1]), self.b_cat)
        return y
