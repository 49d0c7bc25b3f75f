"""AWD with one redundant vector per output row (``scope: row``): the authors' released granularity.

The authors' code (nathanielyvo/WUDI-Merging, ``nlp_roberta/decompose.py``,
``get_common_task_vector(vectors, split="row", l1_coef)``) solves, for a weight matrix with task
vectors τ_i ∈ R^{R×C}, one δ ∈ R^{R×C} minimising

    L(δ) = 1/R · Σ_r 1/(K(K−1)) Σ_{i≠j} |cos(τ_i[r] − δ[r], τ_j[r] − δ[r])|  +  α · Σ_r ‖δ[r]‖₂

by SGD (lr 1e-5, momentum 0.9, weight decay 1e-4, 2000 steps).  L is a sum of independent row
problems, and in each row every gradient (and the momentum and weight-decay terms, which are linear)
is a combination of the τ_i[r] and δ[r]: iterates started at δ = 0 stay in span{τ_i[r]}.  So, as for
a tensor (``core.awd.solve_reduced``, ``docs/awd-solver.md``), each row is solved exactly in an
orthonormal basis of that span from its K×K Gram matrix G_r = [⟨τ_i[r], τ_j[r]⟩]: one pass forms
[R, K, K], all rows are solved together as batched tensor operations, and δ[r] = Σ_k β[r, k] τ_k[r].

Units.  ``absolute`` is the objective above exactly (α and lr in weight units, the cosine term
averaged over rows).  ``relative`` (the default) makes every row the tensor-scope problem of its own
row: the row is divided by s_r = mean_i ‖τ_i[r]‖ (over its non-zero task vectors), the cosine term
is that row's mean |cos| (no 1/R), and α, lr mean what they mean for ``scope: tensor``, whatever
the row's scale or the number of rows.

Differences from the authors' code: a row of a task vector that is exactly zero has no direction
(it counts 0 in the cosines and is left out of δ[r], as a zero task vector is for a tensor; the
authors add 1e-8 to the norms); the iterate with the lowest objective is returned per row (theirs:
the last); float64 on the K-dimensional side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from mergekit_awd.core.awd import SolverSettings, sum_scale
from mergekit_awd.core.awd_descent import descend
from mergekit_awd.core.task_vectors import working_dtype

ROW_CHUNK = 4096  # rows per Gram block: [chunk, K, C] products stay cache-friendly and bounded


def row_grams(task_vectors: torch.Tensor) -> torch.Tensor:
    """[R, K, K] float64 Gram matrices of the rows of task vectors [K, R, C] (any float dtype)."""
    k, rows = task_vectors.shape[:2]
    out = torch.empty((rows, k, k), dtype=torch.float64, device=task_vectors.device)
    work = working_dtype(task_vectors.dtype)
    for start in range(0, rows, ROW_CHUNK):
        block = task_vectors[:, start:start + ROW_CHUNK].to(torch.float64 if work == torch.float64 else work)
        out[start:start + ROW_CHUNK] = torch.einsum("krc,lrc->rkl", block, block).to(torch.float64)
    return out


def row_coordinates(grams: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row, coordinates P [R, K, K] of the task vectors in an orthonormal basis of their span
    (P P^T = G, columns of dropped directions zero), the map M [R, K, K] with β = M d, and the
    active mask [R, K] (non-zero rows of task vectors).  Batched ``core.awd.orthonormal_coordinates``."""
    norms = grams.diagonal(dim1=1, dim2=2).clamp_min(0).sqrt()
    active = norms > 0
    inverse = torch.where(active, 1.0 / torch.where(active, norms, torch.ones_like(norms)), torch.zeros_like(norms))
    cosine = grams * inverse[:, :, None] * inverse[:, None, :]
    values, vectors = torch.linalg.eigh(cosine)
    top = values.max(dim=1, keepdim=True).values.clamp_min(0)
    keep = values > top * 1e-12
    root = torch.where(keep, values.clamp_min(0).sqrt(), torch.zeros_like(values))
    inverse_root = torch.where(keep, 1.0 / torch.where(keep, root, torch.ones_like(root)), torch.zeros_like(root))
    points = vectors * root[:, None, :] * norms[:, :, None]
    to_coefficients = vectors * inverse_root[:, None, :] * inverse[:, :, None]
    return points, to_coefficients, active


def row_loss_and_grad(points: torch.Tensor, delta: torch.Tensor, alpha: float, cos_weight: float,
                      active: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-row objective cos_weight · Σ_{i≠j}|cos| + α‖δ_r‖ [R] and its gradient [R, D] for
    points [R, K, D], δ [R, D] and the active mask [R, K] (a zero row of a task vector has no
    direction and no cosine) (``core.awd.awd_loss_and_grad``, batched over rows)."""
    points = points.permute(1, 2, 0).contiguous()
    loss, grad = _loss_and_grad_by_row(points, _gram_by_row(points), delta.t().contiguous(), alpha, cos_weight,
                                       active.t().to(points.dtype))
    return loss, grad.t()


def _gram_by_row(points: torch.Tensor) -> torch.Tensor:
    """G_ij = ⟨p_i, p_j⟩ [K, K, R] of points [K, D, R]."""
    return (points[:, None] * points[None, :]).sum(dim=2)


def _loss_and_grad_by_row(points: torch.Tensor, gram: torch.Tensor, delta: torch.Tensor, alpha: float,
                          cos_weight: float, active: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``row_loss_and_grad`` with rows last: points p_i [K, D, R], their Gram matrices
    G_ij = ⟨p_i, p_j⟩ [K, K, R], δ [D, R], active [K, R] (0/1 floats); returns loss [R], gradient [D, R].

    With r_i = p_i − δ and a_i = ⟨p_i, δ⟩: ⟨r_i, r_j⟩ = G_ij − a_i − a_j + ‖δ‖² (the norms ‖r_i‖ are
    computed from r_i itself, so a nearly vanishing residual keeps its accuracy), and
    ∇_δ Σ_{i≠j}|cos_ij| = −2 Σ_j c_j r_j with c_j = Σ_i sign(cos_ij)/(‖r_i‖‖r_j‖) − Σ_i |cos_ij| / ‖r_j‖²
    (the same gradient as ``core.awd.awd_loss_and_grad``).  K and D are tiny (≤ 8) and R is thousands,
    so every operation is elementwise over contiguous rows: no R tiny batched matrix products, nothing
    of size K·K·D·R."""
    tiny = torch.finfo(points.dtype).tiny
    residual = points - delta                                                            # [K, D, R]
    inverse_norms = residual.square().sum(dim=1).clamp_min_(tiny).rsqrt_().mul_(active)   # 1/‖r_i‖ [K, R]
    along = (points * delta).sum(dim=1)                                                  # a_i [K, R]
    squared = delta.square().sum(dim=0)                                                  # ‖δ‖² [R]
    pair_scale = inverse_norms[:, None] * inverse_norms[None, :]                         # [K, K, R]
    cos = torch.sub(gram, along[:, None]).sub_(along[None, :]).add_(squared).mul_(pair_scale).clamp_(-1.0, 1.0)
    cos.diagonal(dim1=0, dim2=1).zero_()
    sign = torch.sign(cos)
    row_abs = cos.abs_().sum(dim=0)                                                      # Σ_i |cos_ij| [K, R]
    norm = squared.sqrt()                                                                # [R]
    loss = torch.add(row_abs.sum(dim=0).mul_(cos_weight), norm, alpha=alpha)
    weights = sign.mul_(pair_scale).sum(dim=0).sub_(row_abs.mul_(inverse_norms.square_()))  # c_j [K, R]
    grad = (weights[:, None] * residual).sum(dim=0).mul_(-2.0 * cos_weight)
    # α δ/‖δ‖, and 0 at δ = 0 (the subgradient the other solvers take)
    return loss, grad.addcdiv_(delta, norm.clamp_min(tiny), value=alpha)


def minimise_rows(points: torch.Tensor, settings: SolverSettings, cos_weight: float, active: torch.Tensor
                  ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run the solver (``core.awd_descent``) on every row at once from δ = 0: (best δ [R, D], its loss
    [R], loss at δ = 0 [R]).  Internally rows last (see ``_loss_and_grad_by_row``): each step is a
    fixed number of whole-tensor operations, so their count, not the rows, sets the time of all but
    the largest matrices."""
    rows, _, dims = points.shape
    points = points.permute(1, 2, 0).contiguous()        # [K, D, R]
    active = active.t().to(points.dtype).contiguous()     # [K, R]
    gram = _gram_by_row(points)
    result = descend(lambda delta: _loss_and_grad_by_row(points, gram, delta, settings.alpha, cos_weight, active),
                     points.new_zeros((dims, rows)), settings)
    return result.delta.t(), result.loss, result.initial_loss


@dataclass(frozen=True)
class RowSolveResult:
    """One tensor's row-wise solve.

    coefficients: β [R, K] float64, δ[r] = Σ_k β[r, k] τ_k[r]; zero for zero rows of task vectors.
    active:       [R, K] which task-vector rows are non-zero;  solved_rows: rows with ≥ 2 of them.
    mean_abs_cos_before / after: mean over solved rows of the row's mean pairwise |cos|.
    delta_norm_ratio: Σ_r ‖δ[r]‖ / Σ_r mean_i ‖τ_i[r]‖ over solved rows (dimensionless).
    loss, initial_loss: the objective (solver units) summed over rows, at the result and at δ = 0.
    """

    coefficients: torch.Tensor
    active: torch.Tensor
    solved_rows: int
    mean_abs_cos_before: float
    mean_abs_cos_after: float
    delta_norm_ratio: float
    loss: float
    initial_loss: float
    steps: int
    abs_cos_before: torch.Tensor  # [K, K]: the rows' |cos| matrices averaged over solved rows
    abs_cos_after: torch.Tensor

    def summary(self) -> dict:
        return {"rows": int(self.active.shape[0]), "solved_rows": self.solved_rows,
                "abs_cos_before": self.abs_cos_before.tolist(), "abs_cos_after": self.abs_cos_after.tolist(),
                "mean_abs_cos_before": self.mean_abs_cos_before, "mean_abs_cos_after": self.mean_abs_cos_after,
                "delta_norm_ratio": self.delta_norm_ratio, "loss": self.loss, "initial_loss": self.initial_loss,
                "steps": self.steps, "active": int(self.active.any(dim=0).sum())}


def _abs_cos(grams: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """Per row the |cos| matrix [R, K, K] (zero rows and columns for inactive vectors)."""
    norms = grams.diagonal(dim1=1, dim2=2).clamp_min(0).sqrt()
    inverse = torch.where(active, 1.0 / torch.where(active, norms, torch.ones_like(norms)), torch.zeros_like(norms))
    return (grams * inverse[:, :, None] * inverse[:, None, :]).abs()


def _mean_abs_cos(abs_cos: torch.Tensor) -> torch.Tensor:
    """Per row: 1/(K(K−1)) Σ_{i≠j} |cos| (0 for a row with fewer than two non-zero vectors)."""
    k = abs_cos.shape[1]
    off = abs_cos - torch.diag_embed(abs_cos.diagonal(dim1=1, dim2=2))
    return off.sum(dim=(1, 2)) / (k * (k - 1)) if k > 1 else off.sum(dim=(1, 2))


def _disentangled_grams(grams: torch.Tensor, beta: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """Gram matrices of τ_i[r] − δ[r] (active i), batched ``core.awd._disentangled_gram``."""
    g_beta = torch.einsum("rkl,rl->rk", grams, beta)
    quad = torch.einsum("rk,rk->r", beta, g_beta)
    out = grams - g_beta[:, :, None] - g_beta[:, None, :] + quad[:, None, None]
    mask = active[:, :, None] & active[:, None, :]
    return torch.where(mask, out, torch.zeros_like(out))


def _row_units(grams: torch.Tensor, active: torch.Tensor, solved: torch.Tensor, units: str
               ) -> Tuple[torch.Tensor, float]:
    """The solver's units (module docstring): per-row scale s_r [R] (on the Gram matrices' device) and the
    cosine term's weight.  ``relative``: s_r = mean ‖τ_i[r]‖ over the row's non-zero task vectors (1 for
    rows not solved), weight 1/(K(K−1)); ``absolute``: s_r = 1, weight 1/(R K(K−1))."""
    rows, k, _ = grams.shape
    ones = torch.ones(rows, dtype=torch.float64, device=grams.device)
    if units == "relative":
        norms = grams.diagonal(dim1=1, dim2=2).clamp_min(0).sqrt()
        scale = torch.where(solved, norms.sum(dim=1) / active.sum(dim=1).clamp_min(1), ones)
        return scale, 1.0 / (k * (k - 1)) if k > 1 else 0.0
    return ones, 1.0 / (rows * k * (k - 1)) if k > 1 else 0.0


def solve_rows(grams: torch.Tensor, settings: SolverSettings) -> RowSolveResult:
    """Exact row-wise AWD from the row Gram matrices [R, K, K] (see the module docstring)."""
    grams = grams.to(torch.float64)
    k = grams.shape[1]
    points, to_coefficients, active = row_coordinates(grams)
    solved = active.sum(dim=1) >= 2
    scale, cos_weight = _row_units(grams, active, solved, settings.units)
    best, loss, initial = minimise_rows(points / scale[:, None, None], settings, cos_weight, active)
    best = torch.where(solved[:, None], best * scale[:, None], torch.zeros_like(best))
    beta = torch.einsum("rkd,rd->rk", to_coefficients, best)
    cos_before, cos_after = _abs_cos(grams, active), _abs_cos(_disentangled_grams(grams, beta, active), active)
    before, after = _mean_abs_cos(cos_before), _mean_abs_cos(cos_after)
    delta_norms = torch.einsum("rk,rk->r", beta, torch.einsum("rkl,rl->rk", grams, beta)).clamp_min(0).sqrt()
    mean_norms = grams.diagonal(dim1=1, dim2=2).clamp_min(0).sqrt().sum(dim=1) / active.sum(dim=1).clamp_min(1)
    count = int(solved.sum())
    denominator = float(mean_norms[solved].sum())
    return RowSolveResult(
        coefficients=beta, active=active, solved_rows=count,
        mean_abs_cos_before=float(before[solved].mean()) if count else 0.0,
        mean_abs_cos_after=float(after[solved].mean()) if count else 0.0,
        delta_norm_ratio=float(delta_norms[solved].sum()) / denominator if denominator > 0 else 0.0,
        loss=float(loss[solved].sum()), initial_loss=float(initial[solved].sum()), steps=settings.steps,
        abs_cos_before=cos_before[solved].mean(dim=0) if count else cos_before.new_zeros((k, k)),
        abs_cos_after=cos_after[solved].mean(dim=0) if count else cos_after.new_zeros((k, k)),
    )


def merge_rows(base: torch.Tensor, task_vectors: torch.Tensor, weights: torch.Tensor, lam: float,
               active: torch.Tensor, *, coefficients: Optional[torch.Tensor] = None,
               delta: Optional[torch.Tensor] = None, normalize: bool = False) -> torch.Tensor:
    """θ = θ_base + λ/Z Σ_i w_i (τ_i − δ) row by row, where a zero row τ_i[r] stays zero (its τ̂ is
    not −δ[r]): Σ_i w_i τ̂_i[r] = Σ_i w_i τ_i[r] − S_r δ[r], S_r = Σ_{i active in r} w_i.  δ given as
    β [R, K] (δ[r] = Σ_k β[r, k] τ_k[r]) or as the full [R, C] tensor (the direct solver).  Returned
    in the working dtype of the task vectors."""
    w = weights.to(torch.float64).cpu()
    scale = sum_scale(w, lam, normalize)
    shift = (active.to(torch.float64).cpu() * w[None, :]).sum(dim=1)  # S_r [R]
    dtype = task_vectors.dtype
    summed = torch.einsum("k,krc->rc", w.to(device=task_vectors.device, dtype=dtype), task_vectors)
    if coefficients is not None:
        delta = row_delta(task_vectors, coefficients)
    if delta is not None:
        summed = summed - shift.to(device=summed.device, dtype=dtype)[:, None] * delta.to(summed.device, dtype)
    return base.to(dtype) + scale * summed


def row_delta(task_vectors: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """δ [R, C] from β [R, K]: δ[r] = Σ_k β[r, k] τ_k[r]; the stack's working dtype and device."""
    stack = task_vectors.to(torch.promote_types(task_vectors.dtype, torch.float32))
    return torch.einsum("rk,krc->rc", coefficients.to(device=stack.device, dtype=stack.dtype), stack)


def solve_rows_direct(task_vectors: torch.Tensor, settings: SolverSettings) -> torch.Tensor:
    """The full δ [R, C] optimised directly (cosine term by autograd, the ‖δ[r]‖ subgradient and the
    optimiser as in ``minimise_rows``): the reference ``solve_rows`` is tested against.  (Adam is not
    rotation-equivariant, so here it is the full-space Adam, not ``solve_rows``' reduced one: the
    settings refuse ``scope: row`` + ``solver: direct`` + ``optimizer: adam`` for a merge.)"""
    flat = task_vectors.to(torch.float64)
    grams = row_grams(flat)
    _, _, active = row_coordinates(grams)
    solved = active.sum(dim=1) >= 2
    scale, cos_weight = _row_units(grams, active, solved, settings.units)
    points = (flat / scale[None, :, None]).permute(1, 0, 2)  # [R, K, C]

    def loss_and_grad(delta: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Per-row loss [R] and gradient [C, R] at δ [C, R] (rows last, as ``descend`` keeps them)."""
        with torch.enable_grad():
            d = delta.t().detach().requires_grad_(True)
            residual = points - d[:, None, :]
            norms = torch.linalg.vector_norm(residual, dim=2).clamp_min(torch.finfo(torch.float64).tiny)
            unit = residual / norms[:, :, None] * active[:, :, None]
            cos = unit @ unit.transpose(1, 2)
            cos = cos - torch.diag_embed(cos.diagonal(dim1=1, dim2=2))
            per_row = cos.abs().sum(dim=(1, 2)) * cos_weight
            (grad,) = torch.autograd.grad(per_row.sum(), d)
        norm = torch.linalg.vector_norm(delta, dim=0)
        grad = grad.t() + settings.alpha * delta / torch.where(norm > 0, norm, torch.ones_like(norm))
        return per_row.detach() + settings.alpha * norm, grad

    best = descend(loss_and_grad, points.new_zeros((points.shape[2], points.shape[0])), settings).delta.t()
    return torch.where(solved[:, None], best * scale[:, None], torch.zeros_like(best))
