"""AWD's reference solver: the paper's literal form, δ ∈ Rⁿ optimised directly (``solver: direct``).

``core.awd.solve_reduced`` is checked against it (tests/test_awd_core.py): both run the same
``minimise`` on the same objective, the reduced one in the K-dimensional span of the task vectors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mergekit_awd.core.awd import SolveResult, SolverSettings, _scope_scale, minimise
from mergekit_awd.core.task_vectors import (
    flatten_task_vectors,
    gram_of_task_vectors,
    mean_offdiag,
    pairwise_abs_cos,
    span_coefficients,
)


@dataclass(frozen=True)
class DirectResult:
    """Outcome of the paper's literal full-size solve: δ itself plus the same summary."""

    delta: torch.Tensor
    summary: SolveResult


def solve_direct(task_vectors: torch.Tensor, settings: SolverSettings) -> DirectResult:
    """The paper's literal form: optimise δ ∈ Rⁿ directly on a [K, *shape] stack.

    O(N K² n); kept as the reference that ``solve_reduced`` is checked against.  Runs on the
    tensors' device in float32 (float64 if the input is float64).  δ is returned in the input's
    shape (working dtype); its coefficients are recovered by least squares for the summary.
    """
    flat = flatten_task_vectors(task_vectors)
    k = flat.shape[0]
    gram = gram_of_task_vectors(None, list(flat))
    active = gram.diagonal() > 0
    idx = active.nonzero().flatten()
    scale = _scope_scale(gram, active, settings.units)
    abs_cos = pairwise_abs_cos(gram)
    before = mean_offdiag(abs_cos)
    delta = torch.zeros(flat.shape[1], dtype=flat.dtype, device=flat.device)
    if idx.numel() < 2 or settings.steps == 0:
        summary = SolveResult(torch.zeros(k, dtype=torch.float64), before, before, before, before, 0.0,
                              settings.steps, 0, int(idx.numel()), abs_cos, abs_cos)
        return DirectResult(delta.reshape(task_vectors.shape[1:]), summary)
    points = flat[idx.to(flat.device)] / scale
    best, loss, initial, best_step = minimise(points, settings, k * (k - 1))
    delta = best * scale
    coefficients = torch.zeros(k, dtype=torch.float64)
    if float(delta.norm()) > 0:
        coefficients[idx] = span_coefficients(flat[idx.to(flat.device)], delta)
    after_gram = gram_of_task_vectors(delta, list(flat))
    after = pairwise_abs_cos(torch.where(active[:, None] & active[None, :], after_gram, 0.0))
    summary = SolveResult(
        coefficients=coefficients,
        loss=loss,
        initial_loss=initial,
        mean_abs_cos_before=before,
        mean_abs_cos_after=mean_offdiag(after),
        delta_norm_ratio=float(delta.norm()) / float(gram.diagonal()[active].sqrt().mean()),
        steps=settings.steps,
        best_step=best_step,
        active=int(idx.numel()),
        abs_cos_before=abs_cos,
        abs_cos_after=after,
    )
    return DirectResult(delta.reshape(task_vectors.shape[1:]), summary)
