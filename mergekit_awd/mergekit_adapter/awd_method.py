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

from mergekit_awd.core.awd import TASK_ARITHMETIC, AWDParameters
from mergekit_awd.core.awd_delta import Delta, TaskVectors, awd_task_arithmetic, disentangle, solve_delta
from mergekit_awd.core.selection import is_disentangled
from mergekit_awd.errors import PlanError
from mergekit_awd.mergekit_adapter.combine import (
    BORROWED, borrowed_parameter_specs, combine_parameters, combining_method, combining_methods, merge_with,
    methods_using,
    resolved_combine_parameters, run_method, unused_borrowed,
)
from mergekit_awd.mergekit_adapter.card_parts import CardPart
from mergekit_awd.mergekit_adapter.context import MergeContext
from mergekit_awd.mergekit_adapter.method import PackageMergeMethod, input_labels, require_finite
from mergekit_awd.mergekit_adapter.report import COMBINED, MergeReport


class AWDMerge(PackageMergeMethod):
    """AWD Task Arithmetic (arXiv 2411.18729)."""

    name = "awd"
    pretty_name = "AWD Task Arithmetic (Adaptive Weight Disentanglement)"
    reference_url = "https://arxiv.org/abs/2411.18729"
    settings_class = AWDParameters
    weight_description = "w_i, per-model weight of its disentangled task vector"
    report_filename = "awd_report.json"
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
    card_parts = (CardPart.DISENTANGLEMENT,)

    def merge_tensor(self, group: TensorGroup, name: str, settings: AWDParameters, weights: List[float],
                     context: MergeContext, parameters: Mapping[str, Any]) -> torch.Tensor:
        """δ from the one entry (``core.awd_delta``), then AWD Task Arithmetic or ``combine: X`` on
        τ_i − δ; tensors without a δ (not selected; NaN/Inf let through) merged as the method would
        merge the inputs."""
        base = group.base.tensor
        entries = group.non_base
        vectors = TaskVectors(base, [e.tensor for e in entries])
        delta = None
        if is_disentangled(name, base.ndim, settings.select, group.metadata.vocabulary_axis):
            delta = self._delta(name, settings, vectors, [e.id for e in entries], context)
            if delta is None and settings.check_finite:
                require_finite(name, input_labels(group))
        report = context.report
        if report is not None and delta is not None and delta.summary is not None:
            report.record_scope(name, {"tensors": [name], "models": [str(e.id) for e in entries], **delta.summary})
        if settings.combine != TASK_ARITHMETIC:
            return self._combined(group, name, settings, vectors, delta, context, parameters)
        weight_vector = torch.tensor(weights, dtype=torch.float64)
        if delta is None:
            if report is not None:
                report.record_task_arithmetic(name)
        else:
            self._note_cancelling_weights(name, weight_vector, delta.models_included(), report)
        return awd_task_arithmetic(vectors, delta, weight_vector, settings.sum_lambda, settings.sum_normalize,
                                   base.dtype)

    @staticmethod
    def _delta(name: str, settings: AWDParameters, vectors: TaskVectors, ids: List[Any],
               context: MergeContext) -> Optional[Delta]:
        """This tensor's δ: the model scope's solution, or solved here; None without one (NaN/Inf)."""
        if settings.scope != "model":
            return solve_delta(vectors, settings)
        if context.scope_solution is None:
            raise PlanError(
                f"{name}: awd with scope: model needs the mergekit-awd runner (the "
                "`mergekit-awd` command or mergekit_awd.run_merge), which solves one δ over "
                "all selected tensors before merging; plain mergekit-yaml cannot. "
                "Use scope: tensor there.", tensor=name,
            )
        return context.scope_solution.delta_for(ids, name)

    @staticmethod
    def _combined(group: TensorGroup, name: str, settings: AWDParameters, vectors: TaskVectors,
                  delta: Optional[Delta], context: MergeContext, parameters: Mapping[str, Any]) -> torch.Tensor:
        """``combine: X``: X run on θ_base + (τ_i − δ) (``mergekit_adapter.combine``), or on the
        inputs where there is no δ."""
        x_parameters = combine_parameters(settings.combine, parameters, [e.id for e in group.non_base])
        if context.report is not None:
            context.report.record(COMBINED, name, {"method": settings.combine, "disentangled": delta is not None})
        if delta is None:
            return run_method(settings.combine, group, x_parameters, context).to(group.base.tensor.dtype)
        return merge_with(settings.combine, group, disentangle(vectors, delta), x_parameters, context)

    faster_options = ("--cuda",)

    def matrix_work(self, rows: int, cols: int, tasks: int, settings: AWDParameters) -> Dict[str, float]:
        """The combining method's arithmetic when it is one of this package's matrix methods (its
        SVDs or solves dominate); AWD's own Gram pass and solves cost about task arithmetic."""
        if settings.combine == TASK_ARITHMETIC:
            return {}
        combining = combining_method(settings.combine)
        if not hasattr(combining, "matrix_work"):
            return {}
        return combining.matrix_work(rows, cols, tasks, combining.settings({}))

    def extra_parameter_specs(self) -> Tuple[ParameterSpec, ...]:
        return borrowed_parameter_specs()

    def dynamic_choices(self) -> Dict[str, Tuple[Any, ...]]:
        return {"combine": combining_methods(self.registry)}

    def resolved_parameters(self, shared: Dict[str, Any]) -> Dict[str, Any]:
        combine = shared.get("combine") or TASK_ARITHMETIC
        if combine != TASK_ARITHMETIC:
            return resolved_combine_parameters(combine, shared)
        out = {k: v for k, v in shared.items() if k not in BORROWED}
        unset = AWDParameters()  # AWD Task Arithmetic's λ and normalize defaults live in the settings
        for name, default in (("lambda", unset.sum_lambda), ("normalize", unset.sum_normalize)):
            if out.get(name) is None:
                out[name] = default
        return out

    def parameter_use_error(self, shared: Mapping[str, Any], given: Sequence[str]) -> Optional[str]:
        combine = shared.get("combine") or TASK_ARITHMETIC
        unused = unused_borrowed(combine, given)
        if not unused:
            return None
        return "; ".join(
            f"{p} does nothing with combine: {combine} (it is a parameter of combine: "
            f"{', '.join(methods_using(p, self.dynamic_choices()['combine']))})" for p in unused
        )

    @staticmethod
    def _note_cancelling_weights(name: str, weights: torch.Tensor, included: torch.Tensor,
                                 report: Optional[MergeReport]) -> None:
        """Record when δ cannot change this tensor: the weights of the models it was solved over
        sum to zero (a task negation), so λ Σ w_i (τ_i − δ) = λ Σ w_i τ_i."""
        if report is not None and int(included.sum()) >= 2 and abs(float(weights[included.cpu()].sum())) < 1e-12:
            report.record_no_effect(name, "the weights of the models δ was solved over sum to zero")


awd_merge_method = AWDMerge()
