"""AWD's redundant vector δ for one tensor or one scope: the one entry every consumer goes through.

``solve_delta(vectors, settings)`` decides, from ``AWDParameters`` (scope, solver, optimizer: the
refused combinations are refused by the settings themselves) and the tensor's shape, which solver
runs:

=========  =========  ===========================================================================
scope      solver     δ
=========  =========  ===========================================================================
tensor     reduced    Σ_k β_k τ_k, β from the K×K Gram matrix (``core.awd.solve_reduced``)
tensor     direct     δ ∈ Rⁿ itself (``core.awd_direct.solve_direct``, the paper's literal form)
row        reduced    δ[r] = Σ_k β[r, k] τ_k[r] per output row of a 2-D tensor (``core.awd_rows.solve_rows``)
row        direct     δ ∈ R^{R×C} itself (``core.awd_rows.solve_rows_direct``)
model      reduced    one β over every selected tensor, from the summed Gram matrices (``solve_model_scope``)
=========  =========  ===========================================================================

(``scope: row`` on a 1-D tensor is ``scope: tensor``.)  The result is a ``Delta``; AWD Task Arithmetic
(``awd_task_arithmetic``: θ_base + λ/Z Σ_i w_i (τ_i − δ), paper eq. 11–14) and every combining method
(``disentangle``: the stack of τ̂_i = τ_i − δ, eq. 11) consume it, as do ``inspect`` and the model-scope
planner.  A non-finite Gram matrix (NaN/Inf inputs let through by ``check_finite: false``) has no δ:
``solve_delta`` returns None and the caller merges without one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from mergekit_awd.core.awd import (
    AWDParameters, SolverSettings, disentangled_task_vectors, merge_disentangled, solve_reduced,
)
from mergekit_awd.core.awd_direct import solve_direct
from mergekit_awd.core.awd_rows import merge_rows, row_delta, row_grams, solve_rows, solve_rows_direct
from mergekit_awd.core.settings import setting_fields
from mergekit_awd.core.task_vectors import gram_of_task_vectors, redundant_vector, task_vector_stack, working_dtype
from mergekit_awd.errors import TensorError


class TaskVectors:
    """τ_i = θ_i − θ_base of one tensor, from the raw inputs.  The Gram pass streams over the inputs
    (no [K, n] stack); the stack (working dtype, the base's device) is formed once, when a solver
    or a combining method needs it."""

    def __init__(self, base: Optional[torch.Tensor], models: Sequence[torch.Tensor]) -> None:
        self.base = base
        self.models = list(models)
        self._stack: Optional[torch.Tensor] = None
        self._gram: Optional[torch.Tensor] = None

    @classmethod
    def from_stack(cls, stack: torch.Tensor) -> "TaskVectors":
        """Task vectors already formed as a [K, *shape] stack (no base: for solving, not merging)."""
        vectors = cls(None, list(stack))
        vectors._stack = stack
        return vectors

    @property
    def is_matrix(self) -> bool:
        return len(self.models[0].shape) == 2 if self.models else False

    def stack(self) -> torch.Tensor:
        """[K, *shape] in the working dtype."""
        if self._stack is None:
            if self.base is None:
                raise TensorError("these task vectors' stack was consumed (``disentangle``)")
            self._stack = task_vector_stack(self.base, self.models, device=self.base.device)
        return self._stack

    def gram(self) -> torch.Tensor:
        """G_ij = ⟨τ_i, τ_j⟩, float64 [K, K] on the CPU (the same bits from the inputs or the stack)."""
        if self._gram is None:
            self._gram = gram_of_task_vectors(self.base, self.models)
        return self._gram


@dataclass(frozen=True)
class Delta:
    """δ of one tensor: Σ_k β_k τ_k (``coefficients`` [K]), per row Σ_k β[r, k] τ_k[r] (``coefficients``
    [R, K]), or δ itself (``full``, from a direct solver).  ``included`` [K] or [R, K]: the task vectors
    (rows) δ was solved over — a zero one has no direction and keeps τ̂_i = 0, not −δ.  ``summary``:
    the solve's JSON figures (None when δ comes from a model-scope solution, reported once per scope)."""

    included: torch.Tensor
    coefficients: Optional[torch.Tensor] = None
    full: Optional[torch.Tensor] = None
    summary: Optional[Dict] = None

    @property
    def by_row(self) -> bool:
        return self.included.ndim == 2

    def models_included(self) -> torch.Tensor:
        """[K]: the task vectors δ was solved over in at least one row."""
        return self.included.any(dim=0) if self.by_row else self.included

    def tensor(self, task_vectors: torch.Tensor) -> torch.Tensor:
        """δ in the shape of one task vector of the [K, *shape] stack (its working dtype and device)."""
        if self.full is not None:
            return self.full
        if self.by_row:
            return row_delta(task_vectors, self.coefficients)
        return redundant_vector(task_vectors, self.coefficients)


def delta_settings(solver: SolverSettings, scope: str, solver_kind: str = "reduced") -> AWDParameters:
    """AWD settings solving with ``solver``'s optimiser at ``scope`` (``inspect`` compares scopes)."""
    return AWDParameters(**{item.attribute: getattr(solver, item.attribute) for item in setting_fields(SolverSettings)},
                         scope=scope, solver=solver_kind)


def solve_delta(vectors: TaskVectors, settings: AWDParameters) -> Optional[Delta]:
    """δ of one tensor at ``settings.scope`` ``tensor`` or ``row`` (table above); None when the Gram
    matrix is not finite."""
    solver = settings.solver_settings()
    direct = settings.solver == "direct"
    if settings.scope == "row" and vectors.is_matrix:
        grams = row_grams(vectors.stack())
        if not bool(torch.isfinite(grams).all()):
            return None
        result = solve_rows(grams, solver)
        full = solve_rows_direct(vectors.stack(), solver) if direct else None
        return Delta(result.active, coefficients=None if direct else result.coefficients, full=full,
                     summary=result.summary())
    gram = vectors.gram()
    if not bool(torch.isfinite(gram).all()):
        return None
    included = gram.diagonal() > 0
    if direct:
        found = solve_direct(vectors.stack(), solver)
        return Delta(included, full=found.delta, summary=found.summary.summary())
    result = solve_reduced(gram, solver)
    return Delta(included, coefficients=result.coefficients, summary=result.summary())


@dataclass(frozen=True)
class ScopeDelta:
    """``scope: model``: β over every selected tensor of the scope, the tensors it was solved over,
    those left out for a non-finite Gram matrix (they get the scope's δ without shaping it), and the
    solve's figures."""

    coefficients: torch.Tensor
    included: torch.Tensor
    tensors: List[str]
    non_finite_tensors: List[str]
    summary: Dict = field(default_factory=dict)


def solve_model_scope(grams: Mapping[str, Optional[torch.Tensor]], k: int, settings: SolverSettings) -> ScopeDelta:
    """One δ = Σ_k β_k τ_k over the concatenation of the tensors whose Gram matrices are given
    (Σ_t G_t is the Gram matrix of the concatenation: docs/awd-solver.md, Fact 3); None entries are
    tensors the scope does not disentangle."""
    total = torch.zeros((k, k), dtype=torch.float64)
    tensors, non_finite = [], []
    for name, gram in grams.items():
        if gram is None:
            continue
        if not bool(torch.isfinite(gram).all()):
            non_finite.append(name)
            continue
        total += gram
        tensors.append(name)
    result = solve_reduced(total, settings)
    return ScopeDelta(result.coefficients, total.diagonal() > 0, tensors, non_finite, result.summary())


def awd_task_arithmetic(vectors: TaskVectors, delta: Optional[Delta], weights: torch.Tensor, lam: float,
                        normalize: bool, out_dtype: torch.dtype) -> torch.Tensor:
    """AWD Task Arithmetic, θ_base + λ/Z Σ_i w_i (τ_i − δ) (paper eq. 11–14), in ``out_dtype``;
    plain task arithmetic without a δ."""
    if delta is None:
        return merge_disentangled(vectors.base, vectors.models, weights, lam, normalize=normalize, out_dtype=out_dtype)
    if delta.by_row:
        return merge_rows(vectors.base, vectors.stack(), weights, lam, delta.included, coefficients=delta.coefficients,
                          delta=delta.full, normalize=normalize).to(out_dtype)
    return merge_disentangled(vectors.base, vectors.models, weights, lam, coefficients=delta.coefficients,
                              delta=delta.full, included=delta.included, normalize=normalize, out_dtype=out_dtype)


def disentangle(vectors: TaskVectors, delta: Delta) -> torch.Tensor:
    """The [K, *shape] stack of τ̂_i = τ_i − δ (eq. 11) for the task vectors δ was solved over, the
    others τ_i; overwrites the cached stack (float32 or wider), which is not used afterwards."""
    stack = vectors.stack()
    vectors._stack = None  # overwritten below
    return disentangled_task_vectors(stack, delta.tensor(stack), delta.included, inplace=True)


def remove_redundant_vector(task_vectors: torch.Tensor, solver: SolverSettings
                            ) -> Tuple[torch.Tensor, Dict[str, Any]]:
    """AWD before a matrix method (``tsv`` with ``disentangle``): τ̂_i = τ_i − δ (AWD eq. 11) with one δ
    for this tensor (``scope: tensor``, reduced solver).  Zero task vectors stay zero (AWD's convention).  Returns
    (the [K, *shape] τ̂ stack in the working dtype, the solve's figures)."""
    vectors = TaskVectors.from_stack(task_vectors.to(working_dtype(task_vectors.dtype), copy=True))
    delta = solve_delta(vectors, delta_settings(solver, "tensor"))
    if delta is None:
        raise TensorError("task vectors have non-finite entries")
    return disentangle(vectors, delta), delta.summary


__all__ = ["TaskVectors", "Delta", "delta_settings", "solve_delta", "ScopeDelta", "solve_model_scope",
           "awd_task_arithmetic", "disentangle", "remove_redundant_vector"]
