"""Load-time governance: clamps bound the spectral and Frobenius norms of every expert delta."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from bem_runtime.model import RoutingOverrides
from bem_runtime.model.governance import delta_norms


def effective_deltas(engine) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per site: the attached dW_e = scale * B_e A_e (stack [E, d_out, d_in]) and the base weight."""
    cfg = engine.bem.config
    out = {}
    for site in engine.bem.sites:
        experts = engine.bem.experts[site.name]
        a = experts.a.double().cpu().view(cfg.num_experts, cfg.rank, -1)
        b = experts.b.double().cpu().view(cfg.num_experts, cfg.rank, -1).transpose(1, 2)
        out[site.name] = (cfg.scale * b @ a, site.weight_out_in().double().cpu())
    return out


def raw_norms(toy_dirs, arch="llama") -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Spectral and Frobenius norms of the checkpoint's deltas, by full SVD (independent of the QR path)."""
    tensors = load_file(str(toy_dirs[arch][1] / "experts.safetensors"))
    out = {}
    for name in (k[2:] for k in tensors if k.startswith("A.")):
        dw = 2.0 * tensors[f"B.{name}"].double() @ tensors[f"A.{name}"].double()  # alpha/r = 8/4
        out[name] = (torch.linalg.matrix_norm(dw, ord=2), torch.linalg.matrix_norm(dw, ord="fro"))
    return out


def test_low_rank_norms_match_full_svd():
    a, b = torch.randn(3, 4, 40, dtype=torch.float64), torch.randn(3, 30, 4, dtype=torch.float64)
    sigma, fro = delta_norms(a, b, 0.5)
    dw = 0.5 * b @ a
    torch.testing.assert_close(sigma, torch.linalg.matrix_norm(dw, ord=2))
    torch.testing.assert_close(fro, torch.linalg.matrix_norm(dw, ord="fro"))


def test_spectral_clamp_bounds_sigma_max_and_is_counted(load_engine, toy_dirs):
    raw = raw_norms(toy_dirs)
    sigma_max = float(torch.cat([s for s, _ in raw.values()]).median())
    engine = load_engine(overrides=RoutingOverrides(sigma_max=sigma_max, trust_region=100.0))
    expected = sum(int((s > sigma_max).sum()) for s, _ in raw.values())
    assert engine.load_report == {"spectral_clamp": expected, "trust_region": 0}
    assert expected > 0
    for name, (dw, _) in effective_deltas(engine).items():
        sigma = torch.linalg.matrix_norm(dw, ord=2)
        assert (sigma <= sigma_max * (1 + 1e-5)).all(), name
        # experts under the bound are left exactly as they were
        untouched = raw[name][0] <= sigma_max
        torch.testing.assert_close(sigma[untouched], raw[name][0][untouched], rtol=1e-5, atol=1e-6)


def test_trust_region_bounds_the_frobenius_norm_relative_to_the_weight(load_engine, toy_dirs):
    from bem_runtime.model.toy import EXPERT_STRENGTH

    ratio = 0.4 * EXPERT_STRENGTH  # the toy experts are about EXPERT_STRENGTH * ||W||_F: most clamped
    engine = load_engine(overrides=RoutingOverrides(sigma_max=1e6, trust_region=ratio))
    assert engine.load_report["spectral_clamp"] == 0
    assert engine.load_report["trust_region"] > 0
    clamped = 0
    raw = raw_norms(toy_dirs)
    for name, (dw, w) in effective_deltas(engine).items():
        bound = ratio * torch.linalg.matrix_norm(w, ord="fro")
        fro = torch.linalg.matrix_norm(dw, ord="fro")
        assert (fro <= bound * (1 + 1e-5)).all(), name
        clamped += int((raw[name][1] > bound).sum())
    assert engine.load_report["trust_region"] == clamped


def test_default_toy_governance_clamps_nothing(llama):
    assert llama.load_report == {"spectral_clamp": 0, "trust_region": 0}


@pytest.mark.parametrize("bad", [RoutingOverrides(sigma_max=0.0), RoutingOverrides(trust_region=-1.0)])
def test_non_positive_governance_bounds_are_refused(load_engine, bad):
    with pytest.raises(ValueError, match="must be a finite number > 0"):
        load_engine(overrides=bad)
