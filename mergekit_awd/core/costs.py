"""The arithmetic of each per-matrix method, for the up-front time estimate
(``mergekit_awd.pipeline.estimate``).  Two units, measured once per machine by
``python -m benchmarks.bench_estimates``:

* ``svd``: one float32 ``torch.linalg.svd(full_matrices=False)`` of a rows × cols matrix costs
  rows·cols·min(rows, cols) units;
* ``matmul``: one multiply-add.

Counts are leading terms (what dominates for LLM-sized matrices), not exact operation counts.
"""

from __future__ import annotations

from typing import Dict, Optional

from mergekit_awd.core.ace import AceParameters
from mergekit_awd.core.tsv import TSVSettings, kept_rank
from mergekit_awd.core.wudi import WudiParameters, adam_step_uses_a


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


def iso_work(rows: int, cols: int, tasks: int, common_space_fraction: Optional[float] = None) -> Dict[str, float]:
    """Arithmetic of one Iso merge of K [rows, cols] task matrices, for time estimates (``svd`` in
    units of rows·cols·min(rows, cols)): Iso-C one SVD of Σ τ_i; Iso-CTS (``common_space_fraction``
    given) that SVD plus one per task for its residual subspace."""
    svds = 1 if common_space_fraction is None else 1 + tasks
    return {"svd": float(svds * rows * cols * min(rows, cols))}


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


def ace_work(rows: int, cols: int, tasks: int, settings: AceParameters) -> Dict[str, float]:
    """Arithmetic of one ACE merge of K [rows, cols] task matrices, for time estimates (``matmul`` in
    multiply-adds, ``svd`` in units of rows·cols·min(rows, cols)): per task the Gram W̄ᵀW̄ and W̄ Σ̃
    (2 m n² each K), the LU of the n × n A (n³/3) and its triangular solves and residual check (2 m n²),
    then, in the heterogeneous branch, (Σ W_t) Σ̄ (m n²) and one SVD of Δ_Fused.  Which branch runs
    depends on the task vectors, so the heterogeneous one (the dearer) is counted."""
    matmul = 2 * tasks * rows * cols * cols + cols ** 3 / 3 + 3 * rows * cols * cols
    return {"matmul": float(matmul), "svd": float(rows * cols * min(rows, cols))}
