"""The ``awd`` merge method (AWD Task Arithmetic, arXiv 2411.18729) on mergekit.

Per output tensor, mergekit hands us the base and the K fine-tuned tensors.  Selected tensors
(``core.selection``) are disentangled: τ_i = θ_i − θ_base, δ from the AWD solver, output
θ_base + λ Σ_i w_i (τ_i − δ)  (paper eq. 11–14).  Other tensors get plain task arithmetic,
θ_base + λ Σ_i w_i τ_i, with the same λ and weights.  Parameters: ``core.awd.AWDParameters``.

``scope: tensor`` solves one δ per tensor inside this call; ``scope: row`` one δ per output row of
each selected 2-D tensor (``core.awd_rows``, the authors' released granularity), all rows at once.  ``scope: model`` (the paper's
form: one δ over all selected tensors) needs a solve before any tensor is merged; the planner
(``model_scope``) runs it and hands the coefficients to this method through the solution context.

``combine: X`` (not task_arithmetic) keeps the δ of any scope and hands θ_base + τ_i − δ to method X
(``mergekit_adapter.combine``): mergekit's TIES/DARE/DELLA/Breadcrumbs code or this package's
matrix methods; λ and normalize then default to X's.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from mergekit.merge_methods.base import ParameterSpec, TensorGroup

from mergekit_awd.constants import AWD_REPORT
from mergekit_awd.core.awd import (
    COMBINE_METHODS, TASK_ARITHMETIC_LAMBDA, AWDParameters, disentangled_task_vectors, merge_disentangled, solve_reduced,
)
from mergekit_awd.core.awd_direct import solve_direct
from mergekit_awd.core.awd_rows import merge_rows, row_delta, row_grams, solve_rows, solve_rows_direct
from mergekit_awd.core.selection import is_disentangled
from mergekit_awd.core.task_vectors import gram_matrix, gram_of_task_vectors, redundant_vector, task_vector_stack
from mergekit_awd.errors import PlanError
from mergekit_awd.mergekit_adapter.combine import (
    BORROWED, borrowed_parameter_specs, combine_parameters, combining_method, merge_with, methods_using,
    resolved_combine_parameters, run_method, unused_borrowed,
)
from mergekit_awd.mergekit_adapter.method import PackageMergeMethod, input_labels, require_finite
from mergekit_awd.mergekit_adapter.model_scope.solution import current_scope_solution
from mergekit_awd.mergekit_adapter.report import COMBINED, MergeReport


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
                     report: Optional[MergeReport], parameters: Mapping[str, Any]) -> torch.Tensor:
        if settings.combine != COMBINE_METHODS[0]:
            return self._merge_combined(group, name, settings, report, parameters)
        base = group.base.tensor
        entries = group.non_base
        weight_vector = torch.tensor(weights, dtype=torch.float64)
        models = [e.tensor for e in entries]
        common = {"normalize": settings.sum_normalize, "out_dtype": base.dtype}
        lam = settings.sum_lambda
        if not is_disentangled(name, base.ndim, settings.select, group.metadata.vocabulary_axis):
            if report is not None:
                report.record_task_arithmetic(name)
            return merge_disentangled(base, models, weight_vector, lam, **common)
        if settings.scope == "model":
            solution = _scope_solution(name)
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
            return merge_disentangled(base, [e.tensor for e in entries], weight_vector, settings.sum_lambda,
                                      normalize=settings.sum_normalize, out_dtype=base.dtype)
        solver = settings.solver_settings()
        result = solve_rows(grams, solver)
        included = result.active.any(dim=0)
        self._note_cancelling_weights(name, weight_vector, included, report)
        if settings.solver == "direct":
            merged = merge_rows(base, task_vectors, weight_vector, settings.sum_lambda, result.active,
                                delta=solve_rows_direct(task_vectors, solver), normalize=settings.sum_normalize)
        else:
            merged = merge_rows(base, task_vectors, weight_vector, settings.sum_lambda, result.active,
                                coefficients=result.coefficients, normalize=settings.sum_normalize)
        if report is not None:
            report.record_scope(name, {"tensors": [name], "models": [str(e.id) for e in entries], **result.summary()})
        return merged.to(base.dtype)

    def _merge_combined(self, group: TensorGroup, name: str, settings: AWDParameters,
                        report: Optional[MergeReport], parameters: Mapping[str, Any]) -> torch.Tensor:
        """``combine: X``: δ solved as for AWD Task Arithmetic (the same scope, solver and
        selection), then X run on θ_base + (τ_i − δ) (``mergekit_adapter.combine``)."""
        base = group.base.tensor
        entries = group.non_base
        x_parameters = combine_parameters(settings.combine, parameters, [e.id for e in entries])
        if not is_disentangled(name, base.ndim, settings.select, group.metadata.vocabulary_axis):
            if report is not None:
                report.record(COMBINED, name, {"method": settings.combine, "disentangled": False})
            return run_method(settings.combine, group, x_parameters).to(base.dtype)
        task_vectors = task_vector_stack(base, [e.tensor for e in entries], device=base.device)
        solver = settings.solver_settings()
        summary: Optional[Dict[str, Any]] = None
        if settings.scope == "model":
            solution = _scope_solution(name)
            ids = [e.id for e in entries]
            included = solution.included_for(ids, name)
            delta = redundant_vector(task_vectors, solution.coefficients_for(ids, name))
        else:
            rows = settings.scope == "row" and base.ndim == 2
            grams = row_grams(task_vectors) if rows else gram_matrix(task_vectors)
            if not bool(torch.isfinite(grams).all()):
                if settings.check_finite:
                    require_finite(name, input_labels(group))
                if report is not None:  # no δ from NaN/Inf (check_finite: false): X on the inputs
                    report.record(COMBINED, name, {"method": settings.combine, "disentangled": False})
                return run_method(settings.combine, group, x_parameters).to(base.dtype)
            if rows:
                result = solve_rows(grams, solver)
                included = result.active
                delta = (solve_rows_direct(task_vectors, solver) if settings.solver == "direct"
                         else row_delta(task_vectors, result.coefficients))
                summary = result.summary()
            elif settings.solver == "direct":
                direct = solve_direct(task_vectors, solver)
                included, delta, summary = grams.diagonal() > 0, direct.delta, direct.summary.summary()
            else:
                result = solve_reduced(grams, solver)
                included = grams.diagonal() > 0
                delta = redundant_vector(task_vectors, result.coefficients)
                summary = result.summary()
        disentangled = disentangled_task_vectors(task_vectors, delta, included, inplace=True)
        del delta
        merged = merge_with(settings.combine, group, disentangled, x_parameters)
        if report is not None:
            if summary is not None:
                report.record_scope(name, {"tensors": [name], "models": [str(e.id) for e in entries], **summary})
            report.record(COMBINED, name, {"method": settings.combine, "disentangled": True})
        return merged

    faster_options = ("--cuda",)

    def matrix_work(self, rows: int, cols: int, tasks: int, settings: AWDParameters) -> Dict[str, float]:
        """The combining method's arithmetic when it is one of this package's matrix methods (its
        SVDs or solves dominate); AWD's own Gram pass and solves cost about task arithmetic."""
        if settings.combine == COMBINE_METHODS[0]:
            return {}
        combining = combining_method(settings.combine)
        if not hasattr(combining, "matrix_work"):
            return {}
        return combining.matrix_work(rows, cols, tasks, combining.settings({}))

    def extra_parameter_specs(self) -> Tuple[ParameterSpec, ...]:
        return borrowed_parameter_specs()

    def resolved_parameters(self, shared: Dict[str, Any]) -> Dict[str, Any]:
        combine = shared.get("combine") or COMBINE_METHODS[0]
        if combine != COMBINE_METHODS[0]:
            return resolved_combine_parameters(combine, shared)
        out = {k: v for k, v in shared.items() if k not in BORROWED}
        if out.get("lambda") is None:
            out["lambda"] = TASK_ARITHMETIC_LAMBDA
        if out.get("normalize") is None:
            out["normalize"] = False
        return out

    def parameter_use_error(self, shared: Mapping[str, Any], given: Sequence[str]) -> Optional[str]:
        combine = shared.get("combine") or COMBINE_METHODS[0]
        unused = unused_borrowed(combine, given)
        if not unused:
            return None
        return "; ".join(
            f"{p} does nothing with combine: {combine} (it is a parameter of combine: "
            f"{', '.join(methods_using(p))})" for p in unused
        )

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


def _scope_solution(name: str) -> Any:
    """The model-scope δ the planner solved, or the error saying why there is none."""
    solution = current_scope_solution()
    if solution is None:
        raise PlanError(
            f"{name}: awd with scope: model needs the mergekit-awd runner (the "
            "`mergekit-awd` command or mergekit_awd.run_merge), which solves one δ over "
            "all selected tensors before merging; plain mergekit-yaml cannot. "
            "Use scope: tensor there.", tensor=name,
        )
    return solution


awd_merge_method = AWDMerge()
