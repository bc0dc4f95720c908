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
        self.merged = False  # every row shares one gate, folded into each adapter's w_eff


class BEMLinear(nn.Module):
    """Wraps a frozen Linear/Conv1D; all E experts run as grouped matmuls (no per-expert loop).

    For nn.Linear the down-projections A of all experts are stacked under W into one weight
    [d_out + E*r, d_in], so W x and every A_e x come from a single GEMM. That matters on GPUs:
    alone, A x is a skinny GEMM (E*r outputs, long reduction) that runs at a fraction of the
    memory bandwidth. The base module's weight becomes a view of the top rows (no extra memory),
    so the detached base model is unchanged.
    """

    def __init__(self, base: nn.Module, a: torch.Tensor, b: torch.Tensor, holder: GateHolder) -> None:
        super().__init__()
        e, r, d_in = a.shape
        d_out = b.shape[1]
        self.base = base
        self.holder = holder
        self.d_out = d_out
        self.fused = type(base) is nn.Linear
        a_cat = a.reshape(e * r, d_in)  # row e*r+j is A_e[j]
        if self.fused:
            w_cat = torch.cat([base.weight.detach(), a_cat.to(base.weight.dtype)]).contiguous()
            base.weight = nn.Parameter(w_cat[:d_out], requires_grad=False)
            self.register_buffer("w_cat", w_cat, persistent=False)
            bias = None
            if base.bias is not None:
                bias = torch.cat([base.bias.detach(), base.bias.new_zeros(e * r)])
            self.register_buffer("b_cat", bias, persistent=False)
        else:
            self.register_buffer("a_cat", a_cat.contiguous(), persistent=False)
        # B stacked [E*r, d_out]: row e*r+j is B_e[:, j].
        self.register_buffer("b_stack", b.permute(0, 2, 1).reshape(e * r, d_out).contiguous(), persistent=False)
        self.w_eff: torch.Tensor | None = None  # W + sum_e g_e scale B_e A_e, see merge()

    def merge(self, gate: torch.Tensor) -> None:
        """Fold one gate vector [E*r] (scale included) into w_eff = W + B diag(g) A.

        Decode steps whose rows all share a gate then cost exactly one GEMM with w_eff, like the
        base model; the fold itself costs one pass over W and happens once per chunk.
        """
        a = self.w_cat[self.d_out :] if self.fused else self.a_cat
        w = self.base.weight if isinstance(self.base, nn.Linear) else self.base.weight.t()
        if self.w_eff is None:
            self.w_eff = torch.empty(w.shape, dtype=w.dtype, device=w.device)
        torch.addmm(w, (self.b_stack * gate[:, None]).t(), a, out=self.w_eff)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.holder.gate
        if gate is None:
            return self.base(x)
        if self.holder.merged:
            return F.linear(x, self.w_eff, self.base.bias)
        if self.fused:
            out = F.linear(x, self.w_cat, self.b_cat)
            y, u = out[..., : self.d_out], out[..., self.d_out :] * gate
        else:
            y = self.base(x)
            u = F.linear(x, self.a_cat).mul_(gate)
        # In place into the fresh base output (a row-strided view when fused): one GEMM, no add.
        y.view(-1, self.d_out).addmm_(u.view(-1, u.shape[-1]), self.b_stack)
        return y
