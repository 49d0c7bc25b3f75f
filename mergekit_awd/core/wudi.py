"""WUDI-Merging: "Whoever Started the Interference Should End It" (Cheng, Xiong et al., ICML 2025,
arXiv 2503.08099), by AWD's authors.

For one weight matrix with task vectors τ_i [m, n] (i = 1..K), the merged task vector is

    τ_m = argmin_τ  L(τ),   L(τ) = Σ_i ‖(τ − τ_i) τ_iᵀ‖²_F / ‖τ_i‖²_F                  (paper eq. 7)

(the interference of τ with each task measured on that task's own input directions, the rows
of τ_i), and the output is θ_base + λ τ_m.  Tensors that are not selected matrices get
θ_base + λ · mean_i τ_i (the reference's treatment of every non-2-D tensor).

Solvers
* ``adam`` (the reference): τ⁰ = Σ_i τ_i, then ``steps`` Adam steps (lr 1e-5, no weight decay) on
  L, as FusionBench's ``fusion_bench/method/wudi/wudi.py`` and the authors' ``vit/wudi_main.py``
  do.  It stops early: 300 steps of 1e-5 move each entry by at most 3e-3.  The gradient is taken in
  closed form, 2 (τ A − B) with A and B below formed once, not by autograd through L each step.
* ``exact``: L is a convex quadratic: ∇L = 2 (τ A − B) with A = Σ_i τ_iᵀ τ_i / ‖τ_i‖² [n, n] and
  B = Σ_i τ_i τ_iᵀ τ_i / ‖τ_i‖² [m, n], so its minimisers solve the normal equations τ A = B.
  Gradient descent from Σ_i τ_i (whose rows lie in the row space of the τ_i, the range of A) stays
  in that range and converges to the minimum-norm solution τ* = B A⁺, which ``exact`` computes:
  directly when n ≤ ``DIRECT_MAX_COLUMNS`` (A in float64; by Cholesky when A is full rank and well
  conditioned, the unique solution; else by its eigendecomposition, eigenvalues below 1e-12 · the
  largest dropped), else matrix-free by conjugate gradients on τ ↦ τ A =
  Σ_i (τ τ_iᵀ) τ_i / ‖τ_i‖² started at Σ_i τ_i (never an n × n matrix: O(K m² n) per iteration).
  None of the references has this solver.

Where ours differs from the references, and why
1. Weights: mergekit's per-model ``weight`` w_i scales τ_i before anything (the references have none).
2. A zero task vector (a model identical to the base) is left out of L: the reference divides by
   ‖τ_i‖² = 0 and returns NaN.  With no non-zero task vector τ_m = 0.
3. Computed in float32 (float64 for float64 weights) on the tensors' device; ``exact`` solves in
   float64.  The reference runs Adam on the checkpoint's dtype.
4. λ (default 1.0, the reference's implicit scale) multiplies the merged vector as in mergekit.
5. ``adam``'s gradient in closed form (the reference differentiates L by autograd every step): the
   same gradient, faster (``python -m benchmarks.speed.bench_peer_speed``: 5.6 s and 14.8 s for a 2048×768 and
   a 768×2048 matrix, K = 3, 2 threads, where autograd took 39–74 s); the iterates agree to float32 rounding
   (``tests/test_wudi_iso.py`` compares 300 steps with a re-implementation of the reference).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Literal, Optional, Sequence, Tuple

import torch

from mergekit_awd.core.selection import DEFAULT_SELECT, Select
from mergekit_awd.core.settings import setting, validate_settings
from mergekit_awd.core.task_vectors import weighted_task_matrices, working_dtype

WudiSolver = Literal["adam", "exact"]

# The direct exact solve forms A [n, n] in float64: up to 4096 columns that is 128 MiB.
DIRECT_MAX_COLUMNS = 4096
# Conjugate gradients stop at this relative residual ‖τA − B‖ / ‖B‖, or after CG_MAX_ITERATIONS.
CG_TOLERANCE = 1e-10
CG_MAX_ITERATIONS = 2000
# Eigenvalues of A below this share of the largest are treated as zero (its null space).
EIGENVALUE_CUTOFF = 1e-12
# A is solved by Cholesky when its factor's diagonal spread squared (a lower bound of its condition
# number) stays below this; else by the eigendecomposition, which gives the minimum-norm solution.
CHOLESKY_MAX_CONDITION = 1e8


@dataclass(frozen=True)
class WudiParameters:
    """Every parameter of the ``wudi`` merge method (besides the per-model ``weight``)."""

    lam: float = setting(1.0, "λ, scale of the merged task vector (reference: 1.0)", name="lambda")
    solver: WudiSolver = setting("adam", "adam: the reference's early-stopped Adam; exact: the minimum-norm "
                                         "minimiser (normal equations)")
    steps: int = setting(300, "Adam iterations (solver: adam)", ge=1, le=100_000)
    lr: float = setting(1e-5, "Adam step size in weight units (solver: adam)", gt=0)
    select: Select = setting(DEFAULT_SELECT, "which 2-D tensors get WUDI (the rest: mean of task vectors); "
                                             "matrices: every 2-D tensor, as the references")

    def __post_init__(self) -> None:
        validate_settings(self)


@dataclass(frozen=True)
class WudiResult:
    """τ_m for one matrix and how it was found (losses in squared weight units)."""

    delta: torch.Tensor
    loss: float
    initial_loss: float
    tasks: int
    iterations: int
    residual: Optional[float]  # ‖τA − B‖_F / ‖B‖_F (exact), None for adam

    def summary(self) -> dict:
        return {"loss": self.loss, "initial_loss": self.initial_loss, "tasks": self.tasks,
                "iterations": self.iterations, "relative_residual": self.residual}


def wudi_loss(merged: torch.Tensor, tasks: torch.Tensor, norms_sq: torch.Tensor) -> torch.Tensor:
    """L(τ) = Σ_i ‖(τ − τ_i) τ_iᵀ‖²_F / ‖τ_i‖²_F for non-zero ``tasks`` [K, m, n] (paper eq. 7).

    With m > n it is computed as Σ_i ⟨(τ − τ_i)ᵀ(τ − τ_i), τ_iᵀτ_i⟩_F / ‖τ_i‖² (the same number):
    n × n Gram matrices instead of the reference's K m × m products (a 30522 × 384 embedding would
    need 11 GB for those).
    """
    diff = merged.unsqueeze(0) - tasks
    rows, columns = tasks.shape[1:]
    if rows > columns:
        gram_diff = torch.matmul(diff.transpose(1, 2), diff)
        gram_tasks = torch.matmul(tasks.transpose(1, 2), tasks)
        return ((gram_diff * gram_tasks).sum(dim=(1, 2)) / norms_sq).sum()
    product = torch.matmul(diff, tasks.transpose(1, 2))
    return (product.pow(2).sum(dim=(1, 2)) / norms_sq).sum()


def apply_normal_operator(merged: torch.Tensor, tasks: torch.Tensor, norms_sq: torch.Tensor,
                          chunk_rows: int = 1024) -> torch.Tensor:
    """τ A = Σ_i (τ τ_iᵀ) τ_i / ‖τ_i‖², without forming A, ``chunk_rows`` rows of τ at a time
    (scratch: K · chunk_rows · m)."""
    out = torch.empty_like(merged)
    scaled = tasks / norms_sq[:, None, None]
    for start in range(0, merged.shape[0], chunk_rows):
        block = merged[start:start + chunk_rows]
        out[start:start + chunk_rows] = torch.einsum("kcr,krn->cn", torch.matmul(block, tasks.transpose(1, 2)), scaled)
    return out


def normal_equations(tasks: torch.Tensor, norms_sq: torch.Tensor) -> Tuple[Optional[torch.Tensor], torch.Tensor]:
    """(A, B) of the normal equations τ A = B; A is None (not formed) past ``DIRECT_MAX_COLUMNS``."""
    a, b, _ = _normal_system(tasks, norms_sq)
    return a, b


def _normal_system(tasks: torch.Tensor, norms_sq: torch.Tensor) -> Tuple[Optional[torch.Tensor], torch.Tensor, float]:
    """(A, B, c): the normal equations and the objective's constant c = Σ_i ‖τ_iᵀτ_i‖²_F / ‖τ_i‖², from one
    set of per-task Gram matrices: n × n ones (2 K m n² flops: A_i = τ_iᵀτ_i, B = Σ τ_i A_i / ‖τ_i‖²) when
    n ≤ m and A is formed, else m × m ones (τ_iτ_iᵀ, 2 K m² n flops, and A's K m n² when formed)."""
    rows, columns = tasks.shape[1:]
    inverse = norms_sq.reciprocal()
    if columns <= DIRECT_MAX_COLUMNS and columns <= rows:
        grams = torch.matmul(tasks.transpose(1, 2), tasks)                      # [K, n, n]
        constant = float((grams.pow(2).sum(dim=(1, 2)) * inverse).sum())
        grams.mul_(inverse[:, None, None])
        return grams.sum(dim=0), torch.einsum("kri,kij->rj", tasks, grams), constant
    a = (torch.einsum("kri,krj->ij", tasks * inverse[:, None, None], tasks) if columns <= DIRECT_MAX_COLUMNS
         else None)
    outer = torch.matmul(tasks, tasks.transpose(1, 2))                          # [K, m, m]
    constant = float((outer.pow(2).sum(dim=(1, 2)) * inverse).sum())
    outer.mul_(inverse[:, None, None])
    return a, torch.einsum("krs,ksj->rj", outer, tasks), constant


def _relative_residual(merged: torch.Tensor, tasks: torch.Tensor, norms_sq: torch.Tensor,
                       a: Optional[torch.Tensor], b: torch.Tensor) -> float:
    """‖τA − B‖_F / ‖B‖_F (with A when it was formed: m n² flops instead of K m² n)."""
    product = merged @ a if a is not None else apply_normal_operator(merged, tasks, norms_sq)
    scale = float(b.norm())
    return float((product - b).norm()) / scale if scale > 0 else 0.0


def _solve_exact(tasks: torch.Tensor, norms_sq: torch.Tensor, a: Optional[torch.Tensor], b: torch.Tensor
                 ) -> Tuple[torch.Tensor, int, float]:
    """The minimum-norm solution of τ A = B: (τ, CG iterations, relative residual)."""
    iterations = 0
    if a is not None:
        # A full rank and well conditioned (the common case, K m ≥ n): the unique solution, by Cholesky
        factor, info = torch.linalg.cholesky_ex(a)
        diagonal = factor.diagonal()
        if (int(info) == 0 and float(diagonal.min()) > 0
                and float(diagonal.max() / diagonal.min()) ** 2 < CHOLESKY_MAX_CONDITION):
            merged = torch.cholesky_solve(b.T, factor).T
        else:
            values, vectors = torch.linalg.eigh(a)
            keep = values > EIGENVALUE_CUTOFF * values.max().clamp_min(0)
            basis = vectors[:, keep]
            merged = ((b @ basis) / values[keep]) @ basis.T
    else:
        merged, iterations = _conjugate_gradients(tasks, norms_sq, b, tasks.sum(dim=0))
    return merged, iterations, _relative_residual(merged, tasks, norms_sq, a, b)


def _objective(tasks: torch.Tensor, norms_sq: torch.Tensor,
               system: Optional[Tuple[Optional[torch.Tensor], torch.Tensor, float]] = None):
    """τ ↦ L(τ) as a float; with the normal system (A, B, c) of ``_normal_system`` (A formed):
    ⟨τA, τ⟩ − 2⟨τ, B⟩ + c (the same quadratic, m n² flops); otherwise ``wudi_loss``."""
    if system is None or system[0] is None:
        return lambda merged: float(wudi_loss(merged, tasks, norms_sq))
    a, b, constant = system
    return lambda merged: float(((merged @ a) * merged).sum() - 2 * (merged * b).sum()) + constant


def _conjugate_gradients(tasks: torch.Tensor, norms_sq: torch.Tensor, b: torch.Tensor, start: torch.Tensor,
                         tolerance: float = CG_TOLERANCE, limit: int = CG_MAX_ITERATIONS) -> Tuple[torch.Tensor, int]:
    """CG on τ ↦ τ A (symmetric PSD for the Frobenius inner product) from ``start`` (in A's range)."""
    x = start.clone()
    r = b - apply_normal_operator(x, tasks, norms_sq)
    p = r.clone()
    rr = float((r * r).sum())
    target = tolerance * tolerance * float((b * b).sum())
    for iteration in range(1, limit + 1):
        if rr <= target:
            return x, iteration - 1
        ap = apply_normal_operator(p, tasks, norms_sq)
        curvature = float((p * ap).sum())
        if curvature <= 0:
            return x, iteration - 1
        step = rr / curvature
        x.add_(p, alpha=step)
        r.sub_(ap, alpha=step)
        rr_next = float((r * r).sum())
        p.mul_(rr_next / rr).add_(r)
        rr = rr_next
    return x, limit


def adam_step_uses_a(rows: int, columns: int, tasks: int) -> bool:
    """Whether an Adam step computes τ A with A formed (m n² multiply-adds) rather than
    Σ_i (τ τ_iᵀ) τ_i / ‖τ_i‖² (2 K m² n): A is formed up to ``DIRECT_MAX_COLUMNS`` and cheaper when n ≤ 2 K m."""
    return columns <= DIRECT_MAX_COLUMNS and columns <= 2 * tasks * rows


def _solve_adam(tasks: torch.Tensor, norms_sq: torch.Tensor, steps: int, lr: float,
                system: Tuple[Optional[torch.Tensor], torch.Tensor, float]) -> torch.Tensor:
    """The reference's Adam (torch.optim.Adam, lr, no weight decay) from Σ_i τ_i, ``steps`` steps, with the
    gradient in closed form ∇L = 2 (τ A − B) instead of autograd through L: with A formed (``system``
    from ``_normal_system``, cast to the working dtype) and n ≤ 2 K m, 2 m n² flops a step (τ A);
    otherwise 4 K m² n (τ A = Σ_i (τ τ_iᵀ) τ_i / ‖τ_i‖², ``apply_normal_operator``).  The reference's
    autograd pass costs about 3× its forward's 2 K m n min(m, n) flops and recomputes the τ_i products
    every step; the gradient is the same quadratic's, so the iterates agree to float32 rounding."""
    rows, columns = tasks.shape[1:]
    a64, b64, _ = system
    b = b64.to(tasks.dtype)
    a = a64.to(tasks.dtype) if a64 is not None and adam_step_uses_a(rows, columns, tasks.shape[0]) else None
    merged = torch.nn.Parameter(tasks.sum(dim=0).clone())
    optimizer = torch.optim.Adam([merged], lr=lr, weight_decay=0)
    for _ in range(steps):
        with torch.no_grad():
            product = merged @ a if a is not None else apply_normal_operator(merged, tasks, norms_sq)
            merged.grad = product.sub_(b).mul_(2.0)
        optimizer.step()
    return merged.detach()


def wudi_merge_matrices(task_matrices: torch.Tensor, weights: Optional[Sequence[float]] = None,
                        parameters: WudiParameters = WudiParameters()) -> WudiResult:
    """τ_m for a [K, m, n] stack of task matrices (weights scale each τ_i first); see the module docstring."""
    work = working_dtype(task_matrices.dtype)
    tasks, norms_sq = weighted_task_matrices(task_matrices, weights)
    if tasks.shape[0] == 0:
        zero = torch.zeros(task_matrices.shape[1:], dtype=work, device=task_matrices.device)
        return WudiResult(zero, 0.0, 0.0, 0, 0, None)
    tasks64, norms64 = tasks.double(), norms_sq.double()
    system = _normal_system(tasks64, norms64)  # both solvers: A and B, and the objective's constant
    objective = _objective(tasks64, norms64, system)
    if parameters.solver == "exact":
        solved, iterations, residual = _solve_exact(tasks64, norms64, *system[:2])
        merged = solved.to(work)
    else:
        merged = _solve_adam(tasks, norms_sq, parameters.steps, parameters.lr, system)
        iterations, residual = parameters.steps, None
    merged = merged.contiguous()
    initial, loss = objective(tasks64.sum(dim=0)), objective(merged.double())
    return WudiResult(merged, loss, initial, int(tasks.shape[0]), iterations, residual)


def wudi_work(rows: int, cols: int, tasks: int, settings: WudiParameters) -> Dict[str, float]:
    """Arithmetic of one WUDI merge of K [rows, cols] task matrices, for time estimates
    (``matmul`` in multiply-adds).  Both solvers form A and B of the normal equations (about
    2 K m n min(m, n)); exact then a Cholesky solve (n³/3 + m n²); adam per step τ A (m n²) or,
    where A is not used (``core.wudi.adam_step_uses_a``), Σ_i (τ τ_iᵀ) τ_i (2 K m² n)."""
    system = 2 * tasks * rows * cols * min(rows, cols)
    if settings.solver == "exact":
        return {"matmul": float(system + cols ** 3 / 3 + rows * cols * cols)}
    step = rows * cols * cols if adam_step_uses_a(rows, cols, tasks) else 2 * tasks * rows * rows * cols
    return {"matmul": float(system + settings.steps * step)}


__all__ = ["wudi_work", "WudiParameters", "WudiResult", "wudi_loss", "wudi_merge_matrices", "normal_equations",
           "apply_normal_operator", "adam_step_uses_a", "DIRECT_MAX_COLUMNS"]
