"""Task Singular Vectors: TSV-Merge (and its per-task parts), TSV-Compress and Singular Task Interference.

Gargiulo, Crisostomi, Bucarelli, Scardapane, Silvestri, Rodolà, "Task Singular Vectors: Reducing
Task Interference in Model Merging", arXiv 2412.00081 (CVPR 2025).  Notation follows the paper:

* task matrix of task i on one layer   Δ_i = θ_i − θ_base  ∈ R^{m×n}   (weight units)
* its thin SVD                         Δ_i = U_i Σ_i V_iᵀ, rank r = min(m, n)
* TSV-C (low-rank approximation)       Δ̂_i = U_i[:, :k] Σ_i[:k] V_i[:, :k]ᵀ
* stacked singular vectors             U = [U_1 … U_K] (m × Σk_i),  V = [V_1 … V_K],  Σ = diag(Σ_1 … Σ_K)
* Singular Task Interference           STI({Δ_i}) = ‖(UᵀU − I) Σ (VᵀV − I)‖₁               (weight units)
* TSV-M whitening (orthogonal Procrustes)   U⊥ = argmin_{XᵀX = I} ‖X − U‖_F = P Qᵀ  for  U = P D Qᵀ,
                                            V⊥ likewise
* TSV-M merged task matrix             Δ_M = U⊥ Σ V⊥ᵀ,   θ = θ_base + α Δ_M  (α = 1.0 in the paper)
* every tensor that is not a task matrix: the mean of the task vectors, scaled by the same α.

The paper text was not available offline while this was written, so the formulas above are
named by the paper's section titles rather than its equation numbers.

Parameters of ours (all documented in ``TSVSettings``):

* kept rank per task  k = ⌊fraction · r / K⌋ (at least 1), K = number of non-zero task matrices.
  fraction = 1 is the paper's and the official code's choice, k = ⌊r / K⌋: the K·k kept
  singular vectors then fit in r dimensions, so U⊥ and V⊥ can have orthonormal columns.
* ``svd="exact"``: torch.linalg.svd of every Δ_i, and the polar factors from torch.linalg.svd of
  U and V: the paper's algorithm step by step.
  ``svd="lowrank"``: the top-k triplets from a seeded randomized subspace iteration (Halko,
  Martinsson & Tropp 2011, Alg. 4.4: q = k + oversample columns, ``power_iters`` re-orthonormalised
  power steps, Rayleigh–Ritz on the q-dimensional subspace), and the whitening from the K·k × K·k
  float64 Gram matrices: U⊥ = U (UᵀU)^{-1/2}, which equals P Qᵀ when U has full column rank, so
  two small eigendecompositions replace two m × K·k SVDs.  The same identity is the official
  repository's "eigen" variant (which adds 1e-12 to the roots instead of cutting the null space).

Differences from the official implementation (AntoAndGar/task_singular_vectors,
src/utils/TSVM_utils.py ``compute_and_sum_svd_mem_reduction`` and ``get_tsv_merge``) and from
FusionBench (tanganke/fusion_bench, fusion_bench/method/task_singular_vector/), and why:

1. Singular triplets with σ ≤ σ_max · max(m, n) · ε (numerically zero) are dropped before
   whitening; the official code keeps all k.  A zero singular value has an arbitrary singular
   vector (whatever LAPACK returns); kept, it enters the polar factor and rotates the other
   tasks' vectors although its own contribution is 0.  Dropping it makes the result independent
   of that arbitrary basis, and makes TSV-M return exactly Σ_i Δ_i when the tasks already have
   orthogonal low-rank supports.
2. A task matrix that is exactly zero (a model identical to the base on this tensor, or weight 0)
   is left out of the concatenation, and K in k = ⌊r/K⌋ counts the non-zero ones.  The official
   code would take k arbitrary singular vectors of the zero matrix (see 1).
3. The official code places the K·k kept columns in a zero-padded r-column buffer when K does not
   divide r; we concatenate exactly K·k columns.  The polar factor of [A 0] is [polar(A) ·] when A
   has full column rank, so the merged matrix is the same.
4. When K > r (more tasks than the rank, k would be 0) the official code keeps nothing and the
   layer's merged task matrix is 0; we keep k = 1 per task and the polar factor then has
   orthonormal rows instead of columns (still the nearest such matrix).
5. Per-model weights w_i (mergekit's ``weight``, default 1) scale the task matrices before the SVD,
   as FusionBench's per-model alpha list does; the official code has no per-model weights.
6. Which tensors are task matrices: the official code takes every 2-D tensor except CLIP's
   ``text_projection``; FusionBench every 2-D tensor not in ``exclude_keys``.  Our adapter uses the
   same selection as ``awd`` (by default the 2-D weights inside numbered transformer blocks; token
   embeddings and LM heads are averaged unless ``select: matrices``).
7. ``svd="lowrank"`` is ours (both references use the exact SVD).  It is seeded, so repeated merges
   are bit-identical on the same device; the Gaussian test matrix is drawn on the CPU whatever the
   device, so a ``--cuda`` merge sketches with the CPU merge's matrix.
8. STI: the paper's definition above, with ‖·‖₁ the entry-wise ℓ1 norm (sum of absolute entries)
   and the SVDs truncated to the k that TSV-M keeps (k = None → ⌊r/K⌋) so the Gram matrices stay
   at most r × r.  FusionBench's ``compute_task_singular_interference`` concatenates the U_i and
   V_i along rows (dim 0) instead of columns, which does not match the paper's U = [U_1 … U_K].
   Over a whole model the interference is the sum over layers: for the block-diagonal
   whole-model task matrices the cross-layer Gram blocks are zero, so the entry-wise ℓ1 norm is
   the sum of the per-layer values.
9. Whitening a numerically rank-deficient stack (e.g. two identical fine-tunes: U = [A A]) keeps
   only the non-zero singular directions of U (and V): the partial isometry on their range, not the
   official code's P Qᵀ over all columns, whose zero-d columns are arbitrary.  For two identical
   task matrices TSV-M then returns one copy of their rank-k approximation rather than one copy
   plus arbitrary directions.
10. Everything is computed in float32 (float64 for float64 inputs) on the input's device; the
   official code computes in the checkpoint's dtype (FusionBench casts half precision to float32).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Literal, Optional, Sequence, Tuple, Union, get_args

import torch

from mergekit_awd.core.awd import SolverSettings
from mergekit_awd.core.selection import DEFAULT_SELECT, Select
from mergekit_awd.core.settings import setting, subset, validate_settings
from mergekit_awd.core.task_vectors import stable_svd, working_dtype
from mergekit_awd.core.whitening import gram_matrices, numerical_rank_cut, whiten
from mergekit_awd.errors import InvalidSettingError, TensorError

SVD = Literal["exact", "lowrank"]
SVD_METHODS: Tuple[str, ...] = get_args(SVD)

TaskMatrices = Union[torch.Tensor, Sequence[torch.Tensor]]


@dataclass(frozen=True)
class TSVSettings:
    """How TSV-M finds and keeps each task's singular triplets (single source of the defaults,
    choices and ranges; the ``tsv`` parameter specs are generated from them).

    fraction:    share of the paper's per-task rank r/K that is kept, 0 < fraction ≤ 1
                 (k = max(1, ⌊fraction · r / K⌋)); 1 is the paper's TSV-M.
    svd:         "exact" (torch.linalg.svd) or "lowrank" (seeded randomized subspace iteration).
    oversample:  p ≥ 0, extra columns of the randomized sketch (lowrank only).
    power_iters: q ≥ 0, power (subspace) iterations of the sketch (lowrank only).
    seed:        seed of the sketch's Gaussian test matrix (lowrank only; not a merge parameter).
    """

    fraction: float = setting(1.0, "keep k = max(1, floor(fraction * rank / K)) singular triplets per task",
                              gt=0, le=1)
    svd: SVD = setting("exact", "exact: torch.linalg.svd; lowrank: seeded randomized subspace iteration")
    oversample: int = setting(32, "extra sketch columns (svd: lowrank)", ge=0, le=100_000)
    power_iters: int = setting(2, "power iterations (svd: lowrank)", ge=0, le=1000)
    seed: int = setting(0, "seed of the randomized sketch", ge=0, exposed=False)

    def __post_init__(self) -> None:
        validate_settings(self)


@dataclass(frozen=True)
class TSVParameters(TSVSettings, SolverSettings):
    """Every parameter of the ``tsv`` merge method (besides the per-model ``weight``): the TSV-M
    settings, the AWD solver's (used with ``disentangle``), and:

    lam:         α of the paper, scale of the merged task vector (YAML ``lambda``; paper: 1.0).
    select:      which 2-D tensors get TSV-M; the others get the mean task vector.
    disentangle: remove AWD's redundant vector δ (solved per tensor) before TSV-M.
    """

    lam: float = setting(1.0, "α, scale of the merged task vector (paper: 1.0)", name="lambda")
    select: Select = setting(DEFAULT_SELECT, "which 2-D tensors get TSV-M (the rest: mean of task vectors)")
    disentangle: bool = setting(False, "remove AWD's redundant vector δ before TSV-M")

    def tsv_settings(self) -> TSVSettings:
        return subset(TSVSettings, self)

    def solver_settings(self) -> SolverSettings:
        return subset(SolverSettings, self)


@dataclass(frozen=True)
class SingularTriplets:
    """Top singular triplets of one task matrix: Δ̂ = U diag(S) Vh (U [m, k], S [k], Vh [k, n])."""

    u: torch.Tensor
    s: torch.Tensor
    vh: torch.Tensor
    frobenius_sq: float  # ‖Δ‖_F² of the full task matrix (squared weight units)

    @property
    def rank(self) -> int:
        return int(self.s.shape[0])

    def matrix(self) -> torch.Tensor:
        """The rank-k approximation U diag(S) Vh (TSV-C)."""
        return (self.u * self.s) @ self.vh

    @property
    def energy_kept(self) -> float:
        """Σ_kept σ² / ‖Δ‖_F²: share of the task matrix's squared norm kept (1 for a zero matrix)."""
        if self.frobenius_sq <= 0:
            return 1.0
        return min(float(self.s.double().pow(2).sum()) / self.frobenius_sq, 1.0)


@dataclass(frozen=True)
class TSVMergeResult:
    """TSV-M on one layer: the merged task matrix Δ_M and what was kept.

    delta:       Δ_M = U⊥ Σ V⊥ᵀ [m, n], working dtype, before the final scale α.
    kept_rank:   k, singular triplets kept per task (before dropping numerically zero ones).
    rank:        r = min(m, n).
    tasks:       number of non-zero task matrices that took part.
    kept:        triplets actually kept per task (0 for zero task matrices).
    interference: STI of the kept triplets (weight units), before whitening.
    energy_kept: Σ_kept σ² / ‖Δ_i‖_F² per task.
    """

    delta: torch.Tensor
    kept_rank: int
    rank: int
    tasks: int
    kept: List[int]
    interference: float
    energy_kept: List[float]
    singular_value_sum: float

    def summary(self) -> dict:
        return {
            "sti": self.interference,
            "kept_rank": self.kept_rank,
            "rank": self.rank,
            "tasks": self.tasks,
            "kept": list(self.kept),
            "energy_kept": list(self.energy_kept),
            "singular_value_sum": self.singular_value_sum,
        }


def kept_rank(rows: int, cols: int, tasks: int, fraction: float = 1.0) -> int:
    """k = max(1, ⌊fraction · min(rows, cols) / tasks⌋); 0 when there is nothing to keep.

    The floor carries a 1e-9 relative tolerance so that, e.g., fraction = 1/3 of 3·256 is 256.
    """
    rank = min(rows, cols)
    if tasks <= 0 or rank == 0:
        return 0
    return max(1, min(rank, math.floor(fraction * rank / tasks * (1 + 1e-9))))


def _as_matrix_list(task_matrices: TaskMatrices, what: str = "task matrices") -> List[torch.Tensor]:
    matrices = list(task_matrices.unbind(0)) if isinstance(task_matrices, torch.Tensor) else list(task_matrices)
    if not matrices:
        raise TensorError(f"{what}: need at least one task matrix")
    shape = matrices[0].shape
    for i, matrix in enumerate(matrices):
        if matrix.ndim != 2:
            raise TensorError(f"{what}: task matrix {i} has shape {tuple(matrix.shape)}, expected 2-D")
        if matrix.shape != shape:
            raise TensorError(
                f"{what}: task matrix {i} has shape {tuple(matrix.shape)}, task matrix 0 has {tuple(shape)}"
            )
        if not matrix.is_floating_point():
            raise TensorError(f"{what}: task matrix {i} has dtype {matrix.dtype}, expected floating point")
    return matrices


def _orthonormal_columns(x: torch.Tensor) -> torch.Tensor:
    return torch.linalg.qr(x, mode="reduced").Q


def randomized_triplets(matrix: torch.Tensor, k: int, oversample: int, power_iters: int, seed: int
                        ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k SVD by randomized subspace iteration (Halko et al. 2011, Alg. 4.4 + 5.1).

    Y = A Ω (Ω ~ N(0, 1) of n × q, q = k + p, seeded), Q = orth(Y); then ``power_iters`` times
    Q = orth(A orth(Aᵀ Q)); finally A ≈ Q (Qᵀ A) and the SVD of the q × n matrix Qᵀ A.  Error
    decays like (σ_{q+1}/σ_k)^{2·power_iters+1}: fast for decaying spectra, slow for flat ones.
    Falls back to the exact SVD when q ≥ min(m, n).  Returns (U [m,k], S [k], Vh [k,n]).
    """
    rows, cols = matrix.shape
    q = min(k + oversample, min(rows, cols))
    if q >= min(rows, cols):
        u, s, vh = stable_svd(matrix)
        return u[:, :k], s[:k], vh[:k]
    # drawn on the CPU whatever the device: CPU and CUDA generators give different draws for one seed,
    # and a --cuda merge must use the CPU merge's test matrix
    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed)
    omega = torch.randn(cols, q, generator=generator, dtype=matrix.dtype).to(matrix.device)
    basis = _orthonormal_columns(matrix @ omega)
    for _ in range(power_iters):
        basis = _orthonormal_columns(matrix @ _orthonormal_columns(matrix.T @ basis))
    u_small, s, vh = stable_svd(basis.T @ matrix)
    return (basis @ u_small[:, :k]), s[:k], vh[:k]


def top_singular_triplets(matrix: torch.Tensor, k: int, settings: TSVSettings = TSVSettings()) -> SingularTriplets:
    """The top-k singular triplets of one task matrix (working dtype, the matrix's device).

    Numerically zero singular values (σ ≤ σ_max · max(m, n) · ε) are dropped, so a zero matrix
    gives no triplets.
    """
    work = matrix.to(working_dtype(matrix.dtype))
    rows, cols = work.shape
    frobenius_sq = float(work.double().pow(2).sum()) if work.numel() else 0.0
    empty = SingularTriplets(work.new_zeros((rows, 0)), work.new_zeros((0,)), work.new_zeros((0, cols)), frobenius_sq)
    if k <= 0 or frobenius_sq == 0.0:
        return empty
    if not math.isfinite(frobenius_sq):
        raise TensorError("task matrix has non-finite entries")
    k = min(k, min(rows, cols))
    if settings.svd == "exact":
        u, s, vh = stable_svd(work)
        u, s, vh = u[:, :k], s[:k], vh[:k]
    else:
        u, s, vh = randomized_triplets(work, k, settings.oversample, settings.power_iters, settings.seed)
    keep = numerical_rank_cut(s, rows, cols)
    return SingularTriplets(u[:, :keep], s[:keep], vh[:keep], frobenius_sq)


def interference_from_grams(gram_u: torch.Tensor, s: torch.Tensor, gram_v: torch.Tensor,
                            blocks: Optional[Sequence[int]] = None) -> float:
    """‖(UᵀU − I) diag(S) (VᵀV − I)‖₁ (entry-wise) from UᵀU and VᵀV; weight units.

    ``blocks``: the number of columns each task contributes.  A task's own singular vectors are
    orthonormal, so its diagonal block of UᵀU − I (and VᵀV − I) is zero by definition; it is set to
    exactly zero rather than left at rounding noise (so K = 1 gives exactly 0).
    """
    if s.numel() == 0:
        return 0.0
    eye = torch.eye(s.shape[0], dtype=gram_u.dtype, device=gram_u.device)
    left, right = gram_u - eye, gram_v - eye
    start = 0
    for size in blocks or ():
        left[start:start + size, start:start + size] = 0
        right[start:start + size, start:start + size] = 0
        start += size
    return float(((left * s) @ right).abs().sum())


def _stack(triplets: Sequence[SingularTriplets]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (torch.cat([t.u for t in triplets], dim=1), torch.cat([t.s for t in triplets]),
            torch.cat([t.vh for t in triplets], dim=0))


def _weighted(matrices: List[torch.Tensor], weights: Optional[Sequence[float]]) -> List[torch.Tensor]:
    if weights is None:
        return matrices
    weights = [float(w) for w in (weights.tolist() if isinstance(weights, torch.Tensor) else weights)]
    if len(weights) != len(matrices):
        raise TensorError(f"got {len(weights)} weights for {len(matrices)} task matrices")
    return [m if w == 1.0 else m.to(working_dtype(m.dtype)) * w for m, w in zip(matrices, weights)]


def _is_zero(matrix: torch.Tensor) -> bool:
    return matrix.numel() == 0 or not bool(matrix.ne(0).any())


def task_singular_triplets(task_matrices: TaskMatrices, k: Optional[int] = None,
                           settings: TSVSettings = TSVSettings()) -> Tuple[List[SingularTriplets], int]:
    """Top-k triplets of every task matrix; k = None → ``kept_rank`` over the non-zero ones.

    Returns (triplets per task, in input order; k used).  Zero task matrices give no triplets.
    """
    matrices = _as_matrix_list(task_matrices)
    rows, cols = matrices[0].shape
    active = sum(not _is_zero(m) for m in matrices)
    if k is None:
        k = kept_rank(rows, cols, active, settings.fraction)
    elif int(k) != k or k < 1:
        raise InvalidSettingError(f"k must be a positive integer or None, got {k!r}", name="k")
    return [top_singular_triplets(m, int(k), settings) for m in matrices], int(k)


def singular_task_interference(task_matrices: Sequence[torch.Tensor], k: Optional[int] = None) -> float:
    """Singular Task Interference of one layer's task matrices {Δ_i} (paper, "Singular Task Interference").

    STI = ‖(UᵀU − I) Σ (VᵀV − I)‖₁ (entry-wise ℓ1; weight units) with U = [U_1 … U_K],
    V = [V_1 … V_K], Σ = diag(Σ_1 … Σ_K) from the exact SVDs truncated to the top k triplets per
    task (k = None → ⌊r/K⌋, the rank TSV-M keeps; numerically zero triplets and zero task matrices
    are left out).  0 for K = 1 (UᵀU = I) and for tasks with orthogonal singular subspaces.
    Sum it over layers for a whole model (see the module docstring, difference 8).
    """
    triplets, _ = task_singular_triplets(task_matrices, k, TSVSettings(svd="exact"))
    if not any(t.rank for t in triplets):
        return 0.0
    active = [t for t in triplets if t.rank]
    u, s, vh = _stack(active)
    gram_u, gram_v = gram_matrices(u, vh)
    return interference_from_grams(gram_u, s.double(), gram_v, [t.rank for t in active])


def _whitened(matrices: List[torch.Tensor], settings: TSVSettings):
    """(triplets per task, k, U⊥, S, V⊥ᵀ of the non-zero triplets; None when there are none)."""
    triplets, k = task_singular_triplets(matrices, None, settings)
    active = [t for t in triplets if t.rank]
    if not active:
        return triplets, k, None
    u, s, vh = _stack(active)
    gram_u, gram_v = gram_matrices(u, vh)
    u_perp, vh_perp = whiten(u, vh, settings.svd, grams=(gram_u, gram_v))
    return triplets, k, (u_perp, s, vh_perp, gram_u, gram_v)


def tsv_merge_matrices(task_matrices: TaskMatrices, weights: Optional[Sequence[float]] = None,
                       settings: TSVSettings = TSVSettings()) -> TSVMergeResult:
    """TSV-M on one layer: Δ_M = U⊥ Σ V⊥ᵀ from the top-k triplets of each w_i Δ_i.

    ``task_matrices``: [K, m, n] stack or K matrices; ``weights``: w_i (default 1).
    Exact path: U⊥ = polar(U), V⊥ = polar(V) via SVD (the paper).  Lowrank path: randomized
    triplets, U⊥ = U (UᵀU)^{-1/2} and V⊥ likewise (``whiten``; identical when U, V have full
    column rank).  Returned in the working dtype on the inputs' device; the caller applies α.
    """
    matrices = _weighted(_as_matrix_list(task_matrices), weights)
    rows, cols = matrices[0].shape
    dtype = working_dtype(matrices[0].dtype)
    triplets, k, whitened = _whitened(matrices, settings)
    tasks = sum(not _is_zero(m) for m in matrices)
    energy = [t.energy_kept for t in triplets]
    if whitened is None:
        return TSVMergeResult(torch.zeros((rows, cols), dtype=dtype, device=matrices[0].device), k, min(rows, cols),
                              tasks, [0] * len(triplets), 0.0, energy, 0.0)
    u_perp, s, vh_perp, gram_u, gram_v = whitened
    sti = interference_from_grams(gram_u, s.double(), gram_v, [t.rank for t in triplets if t.rank])
    delta = (u_perp * s) @ vh_perp
    return TSVMergeResult(delta.to(dtype), k, min(rows, cols), tasks, [t.rank for t in triplets],
                          sti, energy, float(s.double().sum()))


def tsv_task_parts(task_matrices: TaskMatrices, settings: TSVSettings = TSVSettings()) -> torch.Tensor:
    """Each task's part of TSV-M, D_i = U⊥[:, B_i] Σ_i V⊥[:, B_i]ᵀ (B_i: task i's kept columns), [K, m, n].

    Σ_i D_i = Δ_M, and TSV-M of the weighted w_i Δ_i is Σ_i w_i D_i for every w_i > 0: scaling a
    matrix scales its singular values only, the whitening depends on U and V alone, and k counts the
    non-zero matrices (a weight 0 would change it).  Layer-wise tuning learns the w_i on these parts.
    """
    matrices = _as_matrix_list(task_matrices)
    dtype = working_dtype(matrices[0].dtype)
    triplets, _, whitened = _whitened(matrices, settings)
    parts = torch.zeros((len(matrices), *matrices[0].shape), dtype=dtype, device=matrices[0].device)
    if whitened is None:
        return parts
    u_perp, s, vh_perp = whitened[:3]
    start = 0
    for index, t in enumerate(triplets):
        block = slice(start, start + t.rank)
        parts[index] = ((u_perp[:, block] * s[block]) @ vh_perp[block]).to(dtype)
        start += t.rank
    return parts


def tsv_work(rows: int, cols: int, tasks: int, settings: TSVSettings) -> Dict[str, float]:
    """Arithmetic of one TSV-M merge of K [rows, cols] task matrices, for time estimates:
    ``svd`` in units of rows·cols·min(rows, cols) (one float32 SVD), ``matmul`` in multiply-adds.

    exact: K SVDs of Δ_i, then the polar factors of the stacked [rows, K k] / [cols, K k] bases;
    lowrank: K sketches of (k + p) columns with q power iterations (2q + 2 products each)."""
    k = kept_rank(rows, cols, tasks, settings.fraction)
    stacked = tasks * k
    polar = rows * stacked * min(rows, stacked) + cols * stacked * min(cols, stacked)
    if settings.svd == "exact":
        return {"svd": float(tasks * rows * cols * min(rows, cols) + polar)}
    sketch = min(k + settings.oversample, min(rows, cols))
    return {"svd": float(polar), "matmul": float(tasks * rows * cols * sketch * (2 * settings.power_iters + 2))}
