"""The adapter forward equals the formula of BEM.md for Linear (with bias) and GPT-2's Conv1D."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from bem_runtime.model.adapter import ActiveGate, BEMLinear, GateHolder, SiteExperts

E, R, D_IN, D_OUT, SCALE = 3, 2, 12, 10, 1.5


def reference(w, bias, a, b, gates, x):
    """y_t = W x_t + b + sum_e g_{t,e} * scale * B_e (A_e x_t), written as plainly as possible."""
    y = x @ w.T + bias
    for e in range(E):
        y = y + gates[..., e : e + 1] * SCALE * ((x @ a[e].T) @ b[e].T)
    return y


@pytest.mark.parametrize("kind", ["linear", "conv1d"])
def test_adapter_matches_the_formula_with_per_token_gates(kind):
    torch.manual_seed(0)
    if kind == "linear":
        base = nn.Linear(D_IN, D_OUT, bias=True)
        w = base.weight.detach().clone()
    else:
        base = Conv1D(D_OUT, D_IN)
        nn.init.normal_(base.bias)
        w = base.weight.detach().t().clone()
    bias = base.bias.detach().clone()
    a, b = torch.randn(E, R, D_IN), torch.randn(E, D_OUT, R)
    holder = GateHolder()
    layer = BEMLinear("site", base, holder)
    x = torch.randn(2, 5, D_IN)
    gates = torch.softmax(torch.randn(2, 5, E), -1)
    gates[0, 1] = 0.0  # a base-only token
    holder.active = [ActiveGate({"site": SiteExperts.stack(a, b)}, (gates * SCALE).repeat_interleave(R, dim=-1), None)]
    with torch.no_grad():
        got = layer(x)
        torch.testing.assert_close(got, reference(w, bias, a, b, gates, x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got[0, 1], x[0, 1] @ w.T + bias, atol=1e-6, rtol=1e-6)
        holder.active = []  # no routing in flight: the wrapped module is the base module
        torch.testing.assert_close(layer(x), x @ w.T + bias, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(base(x), x @ w.T + bias, atol=1e-6, rtol=1e-6)


def test_each_row_gets_only_its_own_checkpoints_experts():
    """Rows of two checkpoints and a bare row in one forward: each row equals its own formula."""
    torch.manual_seed(1)
    base = nn.Linear(D_IN, D_OUT, bias=True)
    w, bias = base.weight.detach().clone(), base.bias.detach().clone()
    a1, b1, a2, b2 = torch.randn(E, R, D_IN), torch.randn(E, D_OUT, R), torch.randn(E, R, D_IN), torch.randn(E, D_OUT, R)
    holder = GateHolder()
    layer = BEMLinear("site", base, holder)
    x = torch.randn(3, 4, D_IN)
    g1, g2 = torch.softmax(torch.randn(1, 4, E), -1), torch.softmax(torch.randn(1, 4, E), -1)
    holder.active = [
        ActiveGate({"site": SiteExperts.stack(a1, b1)}, (g1 * SCALE).repeat_interleave(R, dim=-1), torch.tensor([2])),
        ActiveGate({"site": SiteExperts.stack(a2, b2)}, (g2 * SCALE).repeat_interleave(R, dim=-1), torch.tensor([0])),
        ActiveGate({"elsewhere": SiteExperts.stack(a1, b1)}, g1.repeat_interleave(R, dim=-1), torch.tensor([1])),
    ]
    with torch.no_grad():
        got = layer(x)
    torch.testing.assert_close(got[2:], reference(w, bias, a1, b1, g1, x[2:]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[:1], reference(w, bias, a2, b2, g2, x[:1]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[1], x[1] @ w.T + bias, atol=1e-6, rtol=1e-6)  # no experts at this site
