"""Whitening by polar factors (TSV-M's orthogonal Procrustes step, also Iso-C/CTS's).

U⊥ = argmin_{XᵀX = I} ‖X − U‖_F = P Qᵀ for U = P D Qᵀ (the polar factor), computed from the SVD, or
from the float64 Gram matrix as U (UᵀU)^{-1/2}; both restricted to U's numerical range (a zero
singular value's vectors are arbitrary, so they are cut).  Float32/float64 in, same dtype out.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from mergekit_awd.core.task_vectors import stable_svd


def numerical_rank_cut(s: torch.Tensor, rows: int, cols: int) -> int:
    """Number of singular values above σ_max · max(m, n) · ε (s sorted descending)."""
    if s.numel() == 0:
        return 0
    tol = float(s[0]) * max(rows, cols) * torch.finfo(s.dtype).eps
    return int((s > tol).sum()) if float(s[0]) > 0 else 0


def polar_factor(x: torch.Tensor) -> torch.Tensor:
    """Nearest matrix with orthonormal columns (rows if x is wide): P Qᵀ from x = P D Qᵀ.

    The orthogonal Procrustes solution argmin_{XᵀX = I} ‖X − x‖_F used by TSV-M.  When x is
    numerically rank-deficient (d ≤ max(m, n) · ε · d_max) the factor is not unique; the
    columns of P and Q with zero d are left out, giving the partial isometry on x's range
    (the canonical choice, and what the Gram route of ``whiten`` gives).
    """
    p, d, qh = stable_svd(x)
    keep = numerical_rank_cut(d, *x.shape)
    if keep < d.shape[0]:
        p, qh = p[:, :keep], qh[:keep]
    return p @ qh


def _inverse_sqrt_psd(gram: torch.Tensor) -> torch.Tensor:
    """G^{-1/2} of a symmetric PSD matrix on its numerical range (pseudo-inverse square root)."""
    values, vectors = torch.linalg.eigh(gram)
    top = float(values.max()) if values.numel() else 0.0
    tol = max(top, 0.0) * gram.shape[0] * torch.finfo(gram.dtype).eps
    safe = values.clamp_min(torch.finfo(values.dtype).tiny)
    scale = torch.where(values > tol, safe.rsqrt(), torch.zeros_like(values))
    return (vectors * scale) @ vectors.T


def gram_matrices(u: torch.Tensor, vh: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """UᵀU and VᵀV = Vh Vhᵀ in float64."""
    u64, vh64 = u.double(), vh.double()
    return u64.T @ u64, vh64 @ vh64.T


def whiten(u: torch.Tensor, vh: torch.Tensor, method: str = "exact",
           grams: Optional[Tuple[torch.Tensor, torch.Tensor]] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """TSV-M whitening: (U⊥, V⊥ᵀ) for stacked U [m, c] and Vh = Vᵀ [c, n].

    "exact":   U⊥ = P Qᵀ from the SVD U = P D Qᵀ (the paper), V⊥ likewise.
    "lowrank": U⊥ = U (UᵀU)^{-1/2}, V⊥ᵀ = (VᵀV)^{-1/2} Vᵀ with float64 c × c Gram matrices
               (the concatenations are often square and ill-conditioned, K·k = r); equal to P Qᵀ
               when U has full column rank, and the pseudo-inverse root on its range otherwise.
    """
    if method == "exact":
        return polar_factor(u), polar_factor(vh.T).T
    gram_u, gram_v = grams if grams is not None else gram_matrices(u, vh)
    return u @ _inverse_sqrt_psd(gram_u).to(u.dtype), _inverse_sqrt_psd(gram_v).to(vh.dtype) @ vh


__all__ = ["numerical_rank_cut", "polar_factor", "gram_matrices", "whiten"]
