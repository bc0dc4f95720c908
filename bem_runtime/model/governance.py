"""Load-time governance of expert deltas dW_e = scale * B_e A_e: spectral clamp and trust region."""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


def delta_norms(a: torch.Tensor, b: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Largest singular value and Frobenius norm of scale * B_e A_e for every expert, exactly.

    With B = Q_b R_b and A^T = Q_a R_a, B A = Q_b (R_b R_a^T) Q_a^T, so both norms come from an
    r x r core instead of a d_out x d_in matrix.
    """
    _, r_b = torch.linalg.qr(b.double())  # [E, r, r]
    _, r_a = torch.linalg.qr(a.double().transpose(1, 2))  # [E, r, r]
    core = scale * (r_b @ r_a.transpose(1, 2))
    return torch.linalg.matrix_norm(core, ord=2), torch.linalg.matrix_norm(core, ord="fro")


def govern(
    name: str,
    a: torch.Tensor,
    b: torch.Tensor,
    scale: float,
    weight_fro: float,
    sigma_max: float | None,
    trust_region: float | None,
) -> tuple[torch.Tensor, int, int]:
    """Return B with offending experts scaled down, and the number of spectral and trust-region clamps."""
    b = b.double().clone()
    spectral = trust = 0
    if sigma_max is not None:
        sigma, _ = delta_norms(a, b, scale)
        for e in torch.nonzero(sigma > sigma_max).flatten().tolist():
            b[e] *= sigma_max / sigma[e].item()
            spectral += 1
            log.warning("Clamped spectral norm of %s expert %d from %.4g to %.4g", name, e, sigma[e].item(), sigma_max)
    if trust_region is not None:
        bound = trust_region * weight_fro
        _, fro = delta_norms(a, b, scale)
        for e in torch.nonzero(fro > bound).flatten().tolist():
            b[e] *= bound / fro[e].item()
            trust += 1
            log.warning("Clamped %s expert %d to the trust region: ||dW||_F %.4g > %.4g", name, e, fro[e].item(), bound)
    return b, spectral, trust
