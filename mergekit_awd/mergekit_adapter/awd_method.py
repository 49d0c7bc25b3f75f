"""The ``awd`` merge method (AWD Task Arithmetic, arXiv 2411.18729) on mergekit.

Per output tensor, mergekit hands us the base and the K fine-tuned tensors.  Selected tensors
(``core.selection``) are disentangled: τ_i = θ_i − θ_base, δ from the AWD solver, output
θ_base + λ Σ_i w_i (τ_i − δ)  (paper eq. 11–14).  Other tensors get plain task arithmetic,
θ_base + λ Σ_i w_i τ_i, with the same λ and weights.  Parameters: ``core.awd.AWDParameters``.

``scope: tensor`` solves one δ per tensor inside this call; ``scope: row`` one δ per output row of
each selected 2-D tensor (``core.awd_rows``, the authors' released granularity), all rows at once.  ``scope: model`` (the paper's
form: one δ over all selected tensors) needs a solve before any tensor is merged; the planner
(``model_scope``) runs it and hands the coefficients to this method through the solution context.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch
from mergekit.merge_methods.base import TensorGroup

from mergekit_awd.constants import AWD_REPORT
from mergekit_awd.core.awd import AWDParameters, merge_disentangled, solve_reduced
from mergekit_awd.core.awd_direct import solve_direct
from mergekit_awd.core.awd_rows import merge_rows, row_grams, solve_rows, solve_rows_direct
from mergekit_awd.core.selection import is_disentangled
from mergekit_awd.core.task_vectors import gram_of_task_vectors, task_vector_stack
from mergekit_awd.errors import PlanError
from mergekit_awd.mergekit_adapter.method import PackageMergeMethod, input_labels, require_finite
from mergekit_awd.mergekit_adapter.model_scope.solution import current_scope_solution
from mergekit_awd.mergekit_adapter.report import MergeReport


class AWDMerge(PackageMergeMethod):
    """AWD Task Arithmetic (arXiv 2411.18729)."""

    name = "awd"
    pretty_name = "AWD Task Arithmetic (Adaptive Weight Disentanglement)"
    reference_url = "https://arxiv.org/abs/2411.18729"
    settings_class = AWDParameters
    weight_description = "w_i, per-model weight of its disentangled task vector"
    report_filename = AWD_REPORT
    plans_model_scope = True
    card_parameter_labels = (
        ("alpha", "α (weight of ‖δ‖)"),
        ("lambda", "λ (scale of Σ wᵢ τ̂ᵢ)"),
        ("solver", "solver"),
        ("optimizer", "optimizer"),
        ("steps", "steps"),
        ("lr", "step size β"),
        ("units", "units"),
        ("scope", "scope"),
        ("select", "selected tensors"),
        ("normalize", "normalize"),
    )

    def merge_tensor(self, group: TensorGroup, name: str, settings: AWDParameters, weights: List[float],
                     report: Optional[MergeReport]) -> torch.Tensor:
        base = group.base.tensor
        entries = group.non_base
        weight_vector = torch.tensor(weights, dtype=torch.float64)
        models = [e.tensor for e in entries]
        common = {"normalize": settings.normalize, "out_dtype": base.dtype}
        lam = settings.lam
        if not is_disentangled(name, base.ndim, settings.select, group.metadata.vocabulary_axis):
            if report is not None:
                report.record_task_arithmetic(name)
            return merge_disentangled(base, models, weight_vector, lam, **common)
        if settings.scope == "model":
            solution = current_scope_solution()
            if solution is None:
                raise PlanError(
                    f"{name}: awd with scope: model needs the mergekit-awd runner (the "
                    "`mergekit-awd` command or mergekit_awd.run_merge), which solves one δ over "
                    "all selected tensors before merging; plain mergekit-yaml cannot. "
                    "Use scope: tensor there.", tensor=name,
                )
            ids = [e.id for e in entries]
            included = solution.included_for(ids, name)
            self._note_cancelling_weights(name, weight_vector, included, report)
            return merge_disentangled(
                base, models, weight_vector, lam, coefficients=solution.coefficients_for(ids, name),
                included=included, **common,
            )
        if settings.scope == "row" and base.ndim == 2:
            return self._merge_rows(group, name, settings, weight_vector, report)
        gram = gram_of_task_vectors(base, models)
        if not bool(torch.isfinite(gram).all()):
            if settings.check_finite:
                require_finite(name, input_labels(group))
            # NaN/Inf inputs let through by check_finite: false: no δ can be solved from them,
            # so this tensor is merged as task arithmetic (the non-finite values propagate).
            if report is not None:
                report.record_task_arithmetic(name)
            return merge_disentangled(base, models, weight_vector, lam, **common)
        solver = settings.solver_settings()
        included = gram.diagonal() > 0
        self._note_cancelling_weights(name, weight_vector, included, report)
        if settings.solver == "direct":
            direct = solve_direct(task_vector_stack(base, models), solver)
            result = direct.summary
            merged = merge_disentangled(base, models, weight_vector, lam, delta=direct.delta, included=included,
                                        **common)
        else:
            result = solve_reduced(gram, solver)
            merged = merge_disentangled(base, models, weight_vector, lam, coefficients=result.coefficients,
                                        included=included, **common)
        if report is not None:
            report.record_scope(name, {"tensors": [name], "models": [str(e.id) for e in entries], **result.summary()})
        return merged

    def _merge_rows(self, group: TensorGroup, name: str, settings: AWDParameters, weight_vector: torch.Tensor,
                    report: Optional[MergeReport]) -> torch.Tensor:
        """``scope: row``: one δ per output row (``core.awd_rows``); 1-D tensors take ``scope: tensor``."""
        base = group.base.tensor
        entries = group.non_base
        task_vectors = task_vector_stack(base, [e.tensor for e in entries], device=base.device)
        grams = row_grams(task_vectors)
        if not bool(torch.isfinite(grams).all()):
            if settings.check_finite:
                require_finite(name, input_labels(group))
            if report is not None:
                report.record_task_arithmetic(name)
            return merge_disentangled(base, [e.tensor for e in entries], weight_vector, settings.lam,
                                      normalize=settings.normalize, out_dtype=base.dtype)
        solver = settings.solver_settings()
        result = solve_rows(grams, solver)
        included = result.active.any(dim=0)
        self._note_cancelling_weights(name, weight_vector, included, report)
        if settings.solver == "direct":
            merged = merge_rows(base, task_vectors, weight_vector, settings.lam, result.active,
                                delta=solve_rows_direct(task_vectors, solver), normalize=settings.normalize)
        else:
            merged = merge_rows(base, task_vectors, weight_vector, settings.lam, result.active,
                                coefficients=result.coefficients, normalize=settings.normalize)
        if report is not None:
            report.record_scope(name, {"tensors": [name], "models": [str(e.id) for e in entries], **result.summary()})
        return merged.to(base.dtype)

    @staticmethod
    def _note_cancelling_weights(name: str, weights: torch.Tensor, included: torch.Tensor,
                                 report: Optional[MergeReport]) -> None:
        """Record when δ cannot change this tensor: the weights of the models it was solved over
        sum to zero (a task negation), so λ Σ w_i (τ_i − δ) = λ Σ w_i τ_i."""
        if report is not None and int(included.sum()) >= 2 and abs(float(weights[included.cpu()].sum())) < 1e-12:
            report.record_no_effect(name, "the weights of the models δ was solved over sum to zero")

    def card_lines(self, report: Dict[str, Any], labels: List[str], out_dir: str) -> List[str]:
        from mergekit_awd.hub.card_sections import disentanglement_lines

        return disentanglement_lines(report, labels, out_dir)


awd_merge_method = AWDMerge()
