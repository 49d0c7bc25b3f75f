"""Isotropic merging: Iso-C and Iso-CTS (Marczak et al., "No Task Left Behind: Isotropic Model
Merging with Common and Task-Specific Subspaces", ICML 2025, arXiv 2502.04959).

For one weight matrix with task vectors τ_i [m, n], r = min(m, n):

* Iso-C (paper eq. 6): Σ_i τ_i = U S Vᵀ, merged = U (s̄ I) Vᵀ with s̄ = mean(S) over all r singular
  values: the sum's directions, every one with the same weight (an isotropic spectrum).
* Iso-CTS (paper §4): a common subspace, the top k_c singular directions of Σ_i τ_i, with
  k_c = r − ⌊(r − ⌊f r⌋) / K⌉ · K (f = ``common_space_fraction``, so the task-specific remainder
  divides by K, rounded as the reference rounds); each task adds its top (r − k_c) / K directions of
  τ_i − U_c U_cᵀ τ_i (its part outside the common subspace); the r left and right bases are
  orthogonalised by their polar factors (``core.whitening.polar_factor``, TSV's whitening) and every
  direction gets the mean of the r collected singular values.

Non-matrix (and unselected) tensors get the mean task vector.  The output is θ_base + λ · merged.

Matches FusionBench's ``fusion_bench/method/isotropic_merging/iso_utils.py`` and the authors'
danielm1405/iso-merging.  Where ours differs, and why:
1. Weights: mergekit's per-model ``weight`` w_i scales τ_i before anything (the references have none).
2. A zero task vector (a model identical to the base) is left out, K counting the others: the
   reference takes arbitrary directions from its zero SVD (zero singular values) and, after the
   polar factor, gives them the mean singular value.  With no non-zero task vector the result is 0.
3. Computed in float32 (float64 for float64 weights) on the tensors' device, SVDs through
   ``torch.linalg.svd`` (retried in float64 where LAPACK fails to converge in float32); the reference computes in the checkpoint's dtype.
4. A numerically rank-deficient basis (two identical fine-tunes) is orthogonalised to the partial
   isometry on its range (``polar_factor``), not completed with arbitrary directions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import torch

from mergekit_awd.core.selection import DEFAULT_SELECT, Select
from mergekit_awd.core.settings import setting, validate_settings
from mergekit_awd.core.task_vectors import stable_svd, weighted_task_matrices, working_dtype
from mergekit_awd.core.whitening import polar_factor


@dataclass(frozen=True)
class IsoCParameters:
    """Every parameter of the ``iso_c`` merge method (besides the per-model ``weight``)."""

    lam: float = setting(1.0, "λ, scale of the merged task vector (reference scaling_factor)", name="lambda")
    select: Select = setting(DEFAULT_SELECT, "which 2-D tensors get an isotropic spectrum (the rest: mean of "
                                             "task vectors); matrices: every 2-D tensor, as the references")

    def __post_init__(self) -> None:
        validate_settings(self)


@dataclass(frozen=True)
class IsoCTSParameters(IsoCParameters):
    """Every parameter of ``iso_cts``: Iso-C's and the share of the spectrum kept in common."""

    common_space_fraction: float = setting(0.8, "f, share of the rank given to the common subspace "
                                                "(reference: 0.8)", ge=0, le=1)


@dataclass(frozen=True)
class IsoResult:
    """The merged task matrix and its spectrum: the mean singular value, the common and per-task ranks."""

    delta: torch.Tensor
    mean_singular_value: float
    tasks: int
    common_rank: int
    task_rank: int

    def summary(self) -> dict:
        return {"mean_singular_value": self.mean_singular_value, "tasks": self.tasks,
                "common_rank": self.common_rank, "task_rank": self.task_rank}


def iso_c_matrices(task_matrices: torch.Tensor, weights: Optional[Sequence[float]] = None) -> IsoResult:
    """Iso-C for a [K, m, n] stack (see the module docstring)."""
    tasks, _ = weighted_task_matrices(task_matrices, weights)
    shape = task_matrices.shape[1:]
    if tasks.shape[0] == 0:
        return IsoResult(torch.zeros(shape, dtype=working_dtype(task_matrices.dtype), device=task_matrices.device),
                         0.0, 0, 0, 0)
    u, s, vh = stable_svd(tasks.sum(dim=0))
    mean = s.mean()
    return IsoResult((u * mean) @ vh, float(mean), int(tasks.shape[0]), int(s.numel()), 0)


def common_rank(rank: int, tasks: int, fraction: float) -> int:
    """k_c: ⌊f r⌋ adjusted so that the task-specific remainder r − k_c divides by K (the reference's rounding)."""
    common = int(rank * fraction)
    task_total = round((rank - common) / tasks) * tasks
    return rank - task_total


def iso_cts_matrices(task_matrices: torch.Tensor, weights: Optional[Sequence[float]] = None,
                     common_space_fraction: float = 0.8) -> IsoResult:
    """Iso-CTS for a [K, m, n] stack (see the module docstring)."""
    tasks, _ = weighted_task_matrices(task_matrices, weights)
    count = int(tasks.shape[0])
    if count == 0:
        return iso_c_matrices(task_matrices, weights)
    rank = min(tasks.shape[1], tasks.shape[2])
    k_common = common_rank(rank, count, common_space_fraction)
    per_task = (rank - k_common) // count
    u, s, vh = stable_svd(tasks.sum(dim=0))
    u_common = u[:, :k_common]
    lefts, values, rights = [], [], []
    for task in tasks:
        specific = task - u_common @ (u_common.T @ task)
        u_t, s_t, vh_t = stable_svd(specific)
        lefts.append(u_t[:, :per_task])
        values.append(s_t[:per_task])
        rights.append(vh_t[:per_task])
    left = torch.cat([*lefts, u_common], dim=1)
    spectrum = torch.cat([*values, s[:k_common]])
    right = torch.cat([*rights, vh[:k_common]], dim=0)
    left, right = polar_factor(left), polar_factor(right)
    mean = spectrum.mean()
    return IsoResult((left * mean) @ right, float(mean), count, k_common, per_task)


def iso_work(rows: int, cols: int, tasks: int, common_space_fraction: Optional[float] = None) -> Dict[str, float]:
    """Arithmetic of one Iso merge of K [rows, cols] task matrices, for time estimates (``svd`` in
    units of rows·cols·min(rows, cols)): Iso-C one SVD of Σ τ_i; Iso-CTS (``common_space_fraction``
    given) that SVD plus one per task for its residual subspace."""
    svds = 1 if common_space_fraction is None else 1 + tasks
    return {"svd": float(svds * rows * cols * min(rows, cols))}


__all__ = ["iso_work", "IsoCParameters", "IsoCTSParameters", "IsoResult", "iso_c_matrices", "iso_cts_matrices", "common_rank"]
