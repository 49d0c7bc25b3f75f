"""ACE-Merging: "Data-Free Model Merging with Adaptive Covariance Estimation" (Xu, Wu, Lin, Huang,
Zhu, Shu, Qin, CVPR 2026, arXiv 2603.02945).

The paper's starting point is the merge that minimises Σ_t E‖(W − W_t) x_t‖² over each task's
inputs x_t with covariance Σ_t,  W̄ = (Σ_t W_t Σ_t)(Σ_t Σ_t)⁻¹,  and its claim that Σ_t can be
estimated, without data, from the fine-tuning update itself (its rows taken as samples).  The
method's three parts are named in the paper "adaptive covariance normalization", "collective
structural prior" and "spectral refinement".  The paper's method section was not available
offline while this was written: the equations below are the reference code's
(unravel-xu/ACE-Merging, ``src/merge/strategy.py``, ``MergeStrategy.ace_merging(eps=1e-2,
k_frac=0.3)``, the authors' repository linked from the paper), step by step, in its own names,
not the paper's equation numbers.

For one weight matrix with task vectors W_t [m, n] (t = 1..T; weight units, u; n = input width):

1. Heterogeneity (uncentred):  tr_t = ‖W_t‖²_F [u²],  ℓ_t = log(tr_t + 1e-12),
   γ = var(ℓ) / (mean(ℓ)² + 1e-12)  (torch.var: unbiased, T − 1 in the denominator; unitless)
   and the *heterogeneous* branch runs when γ > ``gamma_threshold`` (the code's ``flag =
   gamma > 0.3``, the threshold hard-coded and unnamed).
2. Covariances from the row-centred updates:  W̄_t = W_t − 1 μ_tᵀ (μ_t the mean row),
   Σ_t = W̄_tᵀ W̄_t [u², n × n].  Homogeneous: Σ̃_t = Σ_t, ε_t = ε.  Heterogeneous (trace
   normalisation): c_t = tr(Σ_t) + 1e-12, Σ̃_t = Σ_t / c_t, ε_t = ε / c_t (unitless).
3. C_agg = 1 · (1ᵀ S / n)  with S = Σ_t Σ̃_t: the row vector of S's column means, added to every
   row (``torch.mean(sum(Sigmas), dim=0, keepdim=True)`` and broadcasting); heterogeneous: also
   divided by mean_t tr_t + 1e-12 (the *uncentred* traces of step 1).
4. A = Σ_t (Σ̃_t + ε_t I) + C_agg,  B = Σ_t W̄_t (Σ̃_t + ε_t I),  W_0 = B A⁻¹  (one n × n solve;
   ``torch.linalg.inv``, and ``torch.linalg.pinv`` when it raises on a singular A).
5. Homogeneous: the merged update is W_0.  Heterogeneous: Σ̄ = (1/T) Σ_t (Σ̃_t + ε_t I),
   Δ_Res = Σ_t W_t (Σ̃_t − Σ̄) (the *uncentred* W_t), Δ_Fused = Δ_Res + W_0 = U S Vᵀ,
   k = ⌊k_frac · min(m, n)⌋, σ_iso = mean(S[:k]), and the merged update is W_0 + σ_iso U_k V_kᵀ
   (an isotropic rank-k term along Δ_Fused's top directions; u).

The output is θ_base + λ · merged (λ: the reference's ``scaling_coefficient``, 1.0).  Non-matrix
(and unselected) tensors get θ_base + λ · mean_t W_t, as the reference does for every non-2-D
tensor (and CLIP's ``text_projection``).

Where the code and the paper differ, or the code does something surprising (kept as the default
unless said otherwise):
a. The paper's formula multiplies Σ_t by the task update W_t; the code's B uses the centred W̄_t
   (the loop variable is overwritten by its centred copy), so 1ᵀ B = 0 and 1ᵀ W_0 = 0: W_0's mean
   row is zero, the part of the updates shared by all output rows is dropped (in the homogeneous
   branch from the merged update itself).  The residual Δ_Res (step 5) uses the uncentred W_t.
   Option ``b_update: uncentred`` uses W_t in B as the formula has it.
b. C_agg is a 1 × n row (column means of Σ_t Σ̃_t) broadcast onto every row of A: a rank-one,
   non-symmetric addition 1 cᵀ, not a covariance-like matrix prior.  Option ``prior:
   mean_covariance`` adds the symmetric (1/T) Σ_t Σ̃_t instead (no division by the mean trace).
c. In the heterogeneous branch C_agg is divided by the mean uncentred trace although the Σ̃_t are
   already trace-normalised: C_agg then has units 1/u² while the Σ̃_t are unitless, so its weight
   in A depends on the update's absolute size.
d. γ is not scale-free: scaling every W_t by s shifts each ℓ_t by 2 log s, which changes mean(ℓ)
   but not var(ℓ).  Traces near 1 (mean(ℓ) ≈ 0) make γ large whatever the spread.  The decision
   uses the uncentred traces, the normalisation the centred ones.
e. ε is absolute, in u² (both branches: Σ̃_t + ε_t I = (Σ_t + ε I) / c_t), so the result depends
   on the updates' size: for small updates (Σ_t ≪ ε I) the ridge dominates and the homogeneous W_0
   tends to (1/T) Σ_t W̄_t, the mean of the centred updates (0.2 % from it at entries ~1e-3 on a
   24 × 16 test matrix, 87 % at entries ~1).
f. A task whose update has identical rows (W̄_t = 0, c_t = 1e-12) adds ε·10¹² I to A in the
   heterogeneous branch, shrinking W_0 towards 0, and ε·10¹² I / T to Σ̄, so that Δ_Res and the
   spectral correction grow like ε·10¹² ‖Σ_t W_t‖ (kept: it is the reference's arithmetic).
g. Σ̄ in Δ_Res includes the ε_t I terms, the Σ̃_t it is subtracted from do not.
h. k = ⌊k_frac · min(m, n)⌋ can be 0 (min(m, n) < 1 / k_frac): the reference then takes the mean
   of no singular values, NaN, and the whole matrix becomes NaN; here the correction is skipped.
i. The correction adds σ_iso along U_k V_kᵀ on top of W_0, which is itself part of Δ_Fused.

Where ours differs from the reference, and why:
1. Weights: mergekit's per-model ``weight`` w_t scales W_t before anything (the reference has none).
2. A zero task vector (a model identical to the base, or w_t = 0) is left out, T counting the
   others, as in this package's other matrix methods: in the reference its trace 0 becomes
   ℓ = log 1e-12 ≈ −27.6, which makes γ large, and its ε / 1e-12 ridge then swamps A and Σ̄ as in
   (f): the reference's merged update explodes (10¹⁰ times the others' on a test matrix).  With no
   non-zero task vector the merged update is 0 (the reference's too).
3. T = 1: γ is undefined (the reference's unbiased variance of one value is NaN, and NaN > 0.3 is
   false), so the homogeneous branch runs, as in the reference; the report gives γ as null.
4. Computed in float32 (float64 for float64 weights), as this package's other matrix methods and as
   the reference (the checkpoint's dtype), on the tensors' device.  The float32 error is about
   cond(A) × 6e-8 relative, cond(A) ≤ (λ_max(A) + ε_total) / ε_total: 1e-6 for full-rank
   covariances, 4e-3 on a test matrix with n > 3m (``tests/test_ace.py``), bf16's resolution.
   A float64 solve cost 4.48× task_arithmetic on the speed benchmark's model, float32 2.86×
   (``benchmarks/results/peer_speed_ace.md``; the float64 figure from the same command at 659c331).
5. B A⁻¹ by one LU factorisation of A and a triangular solve (``lu_factor_ex``/``lu_solve``) rather
   than forming A⁻¹: the same LU as ``torch.linalg.inv``, so A is singular exactly when the
   reference's ``inv`` raises; then B A⁺ (``torch.linalg.pinv``) as the reference, and the result
   says so (``solve: pinv``).  A non-finite LU solution also falls back to the pseudo-inverse.
6. The Σ̃_t are not kept: the sums the code needs (Σ_t Σ̃_t, Σ_t W_t Σ̃_t, Σ_t W_t) are
   accumulated, so memory is a few n × n matrices whatever T.
7. Which tensors: ``select`` (default: 2-D weights inside numbered transformer blocks; the
   reference: every 2-D tensor but ``text_projection``, ``select: matrices``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Literal, Optional, Sequence, Tuple

import torch

from mergekit_awd.core.selection import DEFAULT_SELECT, Select
from mergekit_awd.core.settings import setting, validate_settings
from mergekit_awd.core.task_vectors import weighted_task_matrices, working_dtype

AceUpdate = Literal["centred", "uncentred"]
AcePrior = Literal["row_means", "mean_covariance"]

# The reference's guards against log 0 and division by 0 (in squared weight units where it adds
# them to a trace, unitless in γ's denominator).
TINY = 1e-12


@dataclass(frozen=True)
class AceParameters:
    """Every parameter of the ``ace`` merge method (besides the per-model ``weight``)."""

    lam: float = setting(1.0, "λ, scale of the merged update (reference scaling_coefficient: 1.0)", name="lambda")
    eps: float = setting(1e-2, "ε, ridge added to each Σ_t = W̄ᵀW̄, in squared weight units (reference: 1e-2)",
                         ge=0)
    k_frac: float = setting(0.3, "share of min(m, n) singular directions given the isotropic correction "
                                 "(heterogeneous branch; reference: 0.3)", ge=0, le=1)
    gamma_threshold: float = setting(0.3, "heterogeneity γ = var(log‖W_t‖²) / mean(log‖W_t‖²)² above which the "
                                          "heterogeneous branch runs (reference: 0.3, hard-coded)", ge=0)
    b_update: AceUpdate = setting("centred", "the W_t in B = Σ W_t (Σ̃_t + ε_t I): centred (the reference code) "
                                             "or uncentred (the paper's formula)")
    prior: AcePrior = setting("row_means", "C_agg: row_means (the reference, Σ Σ̃_t's column means added to "
                                           "every row of A) or mean_covariance ((1/T) Σ Σ̃_t)")
    select: Select = setting(DEFAULT_SELECT, "which 2-D tensors get ACE (the rest: mean of task vectors); "
                                             "matrices: every 2-D tensor, as the reference")

    def __post_init__(self) -> None:
        validate_settings(self)


@dataclass(frozen=True)
class AceResult:
    """The merged update for one matrix and how it was found."""

    delta: torch.Tensor
    tasks: int
    heterogeneous: bool
    heterogeneity: Optional[float]  # γ (unitless); None with fewer than two non-zero task vectors
    solve: str  # "lu", "pinv" (the reference's fallback for a singular A) or "none" (no task vector)
    relative_residual: Optional[float]  # ‖W_0 A − B‖_F / ‖B‖_F of the solve
    spectral_rank: int  # k of the isotropic correction (0: none)
    sigma_iso: Optional[float]  # its singular value (weight units), None when not applied

    @property
    def fallback(self) -> bool:
        return self.solve == "pinv"

    def summary(self) -> dict:
        return {"branch": "heterogeneous" if self.heterogeneous else "homogeneous",
                "heterogeneity": self.heterogeneity, "tasks": self.tasks, "solve": self.solve,
                "pinv_fallback": self.fallback, "relative_residual": self.relative_residual,
                "spectral_rank": self.spectral_rank, "sigma_iso": self.sigma_iso}


def heterogeneity(tasks: torch.Tensor) -> Tuple[Optional[float], torch.Tensor]:
    """(γ, the uncentred traces ‖W_t‖²_F) of a [T, m, n] stack; γ None when T < 2 (step 1)."""
    traces = tasks.reshape(tasks.shape[0], -1).pow(2).sum(dim=1)
    if tasks.shape[0] < 2:
        return None, traces
    logs = torch.log(traces + TINY)
    return float(torch.var(logs) / (logs.mean().pow(2) + TINY)), traces


def _solve(a: torch.Tensor, b: torch.Tensor) -> Tuple[torch.Tensor, str]:
    """X with X A = B: LU (singular exactly when ``torch.linalg.inv`` raises), else B A⁺."""
    factor, pivots, info = torch.linalg.lu_factor_ex(a)
    if int(info) == 0:
        solution = torch.linalg.lu_solve(factor, pivots, b, left=False)
        if bool(torch.isfinite(solution).all()):
            return solution, "lu"
    return b @ torch.linalg.pinv(a), "pinv"


def ace_merge_matrices(task_matrices: torch.Tensor, weights: Optional[Sequence[float]] = None,
                       parameters: AceParameters = AceParameters()) -> AceResult:
    """The merged update for a [T, m, n] stack of task matrices (weights scale each W_t first);
    see the module docstring, whose steps the comments number."""
    work = working_dtype(task_matrices.dtype)
    device = task_matrices.device
    kept, _ = weighted_task_matrices(task_matrices, weights)
    count = int(kept.shape[0])
    if count == 0:
        zero = torch.zeros(task_matrices.shape[1:], dtype=work, device=device)
        return AceResult(zero, 0, False, None, "none", None, 0, None)
    tasks = kept.to(work)
    rows, columns = tasks.shape[1:]
    gamma, traces = heterogeneity(tasks)                                       # step 1
    hetero = gamma is not None and gamma > parameters.gamma_threshold
    eye = torch.eye(columns, dtype=work, device=device)
    sigma_total = torch.zeros((columns, columns), dtype=work, device=device)  # Σ_t Σ̃_t
    b = torch.zeros((rows, columns), dtype=work, device=device)
    weighted = torch.zeros_like(b) if hetero else None                         # Σ_t W_t Σ̃_t
    eps_total = 0.0
    for task in tasks:
        mean_row = task.mean(dim=0, keepdim=True)
        centred = task - mean_row                                              # step 2
        gram = centred.T @ centred
        scale = 1.0 / (float(torch.trace(gram)) + TINY) if hetero else 1.0
        sigma = gram.mul_(scale)
        eps_t = parameters.eps * scale
        product = centred @ sigma                                              # W̄_t Σ̃_t
        row_part = mean_row @ sigma                                            # W_t Σ̃_t = W̄_t Σ̃_t + 1 μ_tᵀ Σ̃_t
        sigma_total += sigma
        eps_total += eps_t
        b += product + eps_t * centred                                         # step 4: W̄_t (Σ̃_t + ε_t I)
        if parameters.b_update == "uncentred":
            b += row_part + eps_t * mean_row
        if weighted is not None:
            weighted += product + row_part
    if parameters.prior == "row_means":                                        # step 3
        prior = sigma_total.mean(dim=0, keepdim=True)
        if hetero:
            prior = prior / (float(traces.mean()) + TINY)
    else:
        prior = sigma_total / count
    a = sigma_total + eps_total * eye + prior                                  # step 4
    merged, how = _solve(a, b)
    scale_b = float(b.norm())
    residual = float((merged @ a - b).norm()) / scale_b if scale_b > 0 else 0.0
    rank, sigma_iso = 0, None
    if hetero:                                                                 # step 5
        sigma_mean = (sigma_total + eps_total * eye) / count
        fused = weighted - tasks.sum(dim=0) @ sigma_mean + merged
        u, s, vh = torch.linalg.svd(fused, full_matrices=False)
        rank = int(s.numel() * parameters.k_frac)
        if rank > 0:
            value = s[:rank].mean()
            merged = merged + value * (u[:, :rank] @ vh[:rank])
            sigma_iso = float(value)
    gamma_out = gamma if gamma is None or math.isfinite(gamma) else None
    return AceResult(merged.to(work).contiguous(), count, hetero, gamma_out, how, residual, rank, sigma_iso)


def ace_work(rows: int, cols: int, tasks: int, settings: AceParameters) -> Dict[str, float]:
    """Arithmetic of one ACE merge of K [rows, cols] task matrices, for time estimates (``matmul`` in
    multiply-adds, ``svd`` in units of rows·cols·min(rows, cols)): per task the Gram W̄ᵀW̄ and W̄ Σ̃
    (2 m n² each K), the LU of the n × n A (n³/3) and its triangular solves and residual check (2 m n²),
    then, in the heterogeneous branch, (Σ W_t) Σ̄ (m n²) and one SVD of Δ_Fused.  Which branch runs
    depends on the task vectors, so the heterogeneous one (the dearer) is counted."""
    matmul = 2 * tasks * rows * cols * cols + cols ** 3 / 3 + 3 * rows * cols * cols
    return {"matmul": float(matmul), "svd": float(rows * cols * min(rows, cols))}


__all__ = ["ace_work", "AceParameters", "AceResult", "ace_merge_matrices", "heterogeneity"]
