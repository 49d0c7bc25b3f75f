"""The ``awd`` merge method (AWD Task Arithmetic) as a mergekit ``GroupMergeMethod``.

Per output tensor, mergekit hands us the base and the K fine-tuned tensors.  Selected tensors
(see ``selection``) are disentangled: τ_i = θ_i − θ_base, δ from the AWD solver, output
θ_base + λ Σ_i w_i (τ_i − δ)  (paper eq. 11–14).  Other tensors get plain task arithmetic,
θ_base + λ Σ_i w_i τ_i, with the same λ and weights.

``scope: tensor`` solves one δ per tensor inside this call.  ``scope: model`` (the paper's
form: one δ over all selected tensors) needs a solve before any tensor is merged; the
mergekit-awd planner (``model_scope``) runs it and hands the coefficients to this method through
``scope_solution``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import torch
from pydantic import Field
from typing_extensions import Annotated, Literal

from mergekit.merge_methods.base import (
    BasePolicy,
    GroupMergeMethod,
    InputContract,
    MergeMethodSpec,
    ParameterScope,
    ParameterSpec,
    TensorGroup,
)

from mergekit_awd.core.awd import SolverSettings, merge_disentangled, solve_direct, solve_reduced
from mergekit_awd.core.task_vectors import gram_of_task_vectors, task_vector_stack
from mergekit_awd.mergekit_adapter.model_scope.solution import current_scope_solution
from mergekit_awd.mergekit_adapter.report import active_report
from mergekit_awd.mergekit_adapter.selection import DEFAULT_SELECT, is_disentangled

# Defaults: see README "Where the defaults come from" for the benchmark figures behind them.
DEFAULT_LAMBDA = 0.3
DEFAULT_ALPHA = 0.03
DEFAULT_STEPS = 100
DEFAULT_LR = 0.01
DEFAULT_OPTIMIZER = "adam"
DEFAULT_SOLVER = "reduced"
DEFAULT_SCOPE = "tensor"
DEFAULT_UNITS = "relative"
# Upper bound of ``steps`` (README, "Parameters of `awd`"); the default is 100.
MAX_STEPS = 10_000

SOLVER_PARAMETERS: Tuple[str, ...] = ("alpha", "steps", "lr", "optimizer", "units")


FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
SelectChoice = Literal["block_linear", "matrices", "all", "none"]


def weight_parameter_spec(description: str) -> ParameterSpec:
    """``weight``: w_i, per fine-tuned model (mergekit's name), default 1."""
    return ParameterSpec("weight", FiniteFloat, ParameterScope.NON_BASE, default=1.0, description=description)


def select_parameter_spec(description: str = "which tensors are disentangled") -> ParameterSpec:
    """``select``: block_linear | matrices | all | none (see ``selection``)."""
    return ParameterSpec("select", SelectChoice, ParameterScope.SHARED, default=DEFAULT_SELECT, description=description)


def solver_parameter_specs(note: str = "") -> Tuple[ParameterSpec, ...]:
    """The AWD solver's parameters (α, N, β, optimiser, units), shared by ``awd`` and ``tsv``."""
    shared = ParameterScope.SHARED
    return (
        ParameterSpec("alpha", Annotated[float, Field(ge=0, allow_inf_nan=False)], shared,
                      default=DEFAULT_ALPHA, description="α, weight of ‖δ‖ (relative units by default)" + note),
        ParameterSpec("steps", Annotated[int, Field(ge=1, le=MAX_STEPS)], shared,
                      default=DEFAULT_STEPS, description=f"N, solver iterations, 1 to {MAX_STEPS}" + note),
        ParameterSpec("lr", Annotated[float, Field(gt=0, allow_inf_nan=False)], shared,
                      default=DEFAULT_LR, description="β, solver step size" + note),
        ParameterSpec("optimizer", Literal["gd", "adam"], shared, default=DEFAULT_OPTIMIZER,
                      description="gd: the paper's Algorithm 1; adam" + note),
        ParameterSpec("units", Literal["relative", "absolute"], shared, default=DEFAULT_UNITS,
                      description="relative: α and lr relative to mean ‖τ_i‖; absolute: paper's raw form" + note),
    )


def awd_parameter_specs() -> Tuple[ParameterSpec, ...]:
    """Parameters of ``awd``, in mergekit's conventions (``weight``, ``lambda``, ``normalize``)."""
    shared = ParameterScope.SHARED
    return (
        weight_parameter_spec("w_i, per-model weight of its disentangled task vector"),
        ParameterSpec("lambda", FiniteFloat, shared, default=DEFAULT_LAMBDA,
                      description="λ, scale of Σ_i w_i (τ_i − δ)"),
        ParameterSpec("normalize", bool, shared, default=False,
                      description="divide the weighted sum by Σ_i w_i"),
        *solver_parameter_specs(),
        ParameterSpec("solver", Literal["reduced", "direct"], shared, default=DEFAULT_SOLVER,
                      description="reduced: exact K-dimensional solve; direct: full-size δ"),
        ParameterSpec("scope", Literal["tensor", "model"], shared, default=DEFAULT_SCOPE,
                      description="tensor: one δ per tensor; model: one δ over all selected tensors"),
        select_parameter_spec(),
        ParameterSpec("check_finite", bool, shared, default=True,
                      description="refuse inputs with NaN/Inf (false: merge them anyway)"),
    )


def input_labels(group: TensorGroup) -> List[Tuple[str, torch.Tensor]]:
    """(label, tensor) of every input of a group; the base is marked as such."""
    return [(f"{e.id}{' (base model)' if e.is_base else ''}", e.tensor) for e in group.entries]


def require_finite(tensor_name: str, inputs: Sequence[Tuple[str, torch.Tensor]], opt_out: bool = True) -> None:
    """Raise naming the tensor and the model when an input holds NaN or Inf."""
    for label, tensor in inputs:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(
                f"{tensor_name}: non-finite values (NaN or Inf) in {label}; fix the checkpoint"
                + (", or set check_finite: false to merge anyway" if opt_out else "")
            )


def solver_settings(parameters: Dict[str, Any]) -> SolverSettings:
    """SolverSettings from bound ``awd`` parameters."""
    return SolverSettings(**{name: parameters[name] for name in SOLVER_PARAMETERS})


class AWDMerge(GroupMergeMethod):
    """AWD Task Arithmetic (arXiv 2411.18729)."""

    def __init__(self) -> None:
        self.spec = MergeMethodSpec(
            name="awd",
            pretty_name="AWD Task Arithmetic (Adaptive Weight Disentanglement)",
            reference_url="https://arxiv.org/abs/2411.18729",
            parameters=awd_parameter_specs(),
            contract=InputContract(base=BasePolicy.REQUIRED, min_non_base=1),
        )

    def merge_group(self, group: TensorGroup, /, **parameters: Any) -> torch.Tensor:
        base = group.base.tensor
        entries = group.non_base
        if not entries:
            return base
        name = group.metadata.name or "<unnamed tensor>"
        merged = self._merge(group, name, parameters)
        if parameters["check_finite"] and not bool(torch.isfinite(merged).all()):
            # NaN/Inf in any input used by the merge reaches the output (or the Gram matrix, which
            # _merge checks first); only then are the inputs scanned to name the model.
            require_finite(name, input_labels(group))
            raise ValueError(f"{name}: the merged values overflow {merged.dtype} (inputs are finite)")
        return merged

    def _merge(self, group: TensorGroup, name: str, parameters: Dict[str, Any]) -> torch.Tensor:
        base = group.base.tensor
        entries = group.non_base
        weights = torch.tensor([parameters["weight"][e.id] for e in entries], dtype=torch.float64)
        models = [e.tensor for e in entries]
        report = active_report()
        common = {"normalize": parameters["normalize"], "out_dtype": base.dtype}
        lam = parameters["lambda"]
        if not is_disentangled(name, base.ndim, parameters["select"], group.metadata.vocabulary_axis):
            if report is not None:
                report.record_task_arithmetic(name)
            return merge_disentangled(base, models, weights, lam, **common)
        if parameters["scope"] == "model":
            solution = current_scope_solution()
            if solution is None:
                raise RuntimeError(
                    f"{name}: awd with scope: model needs the mergekit-awd runner (the "
                    "`mergekit-awd` command or mergekit_awd.run_merge), which solves one δ over "
                    "all selected tensors before merging; plain mergekit-yaml cannot. "
                    "Use scope: tensor there."
                )
            ids = [e.id for e in entries]
            return merge_disentangled(
                base, models, weights, lam, coefficients=solution.coefficients_for(ids, name),
                included=solution.included_for(ids, name), **common,
            )
        gram = gram_of_task_vectors(base, models)
        if not bool(torch.isfinite(gram).all()):
            if parameters["check_finite"]:
                require_finite(name, input_labels(group))
            # NaN/Inf inputs let through by check_finite: false: no δ can be solved from them,
            # so this tensor is merged as task arithmetic (the non-finite values propagate).
            if report is not None:
                report.record_task_arithmetic(name)
            return merge_disentangled(base, models, weights, lam, **common)
        settings = solver_settings(parameters)
        included = gram.diagonal() > 0
        if parameters["solver"] == "direct":
            direct = solve_direct(task_vector_stack(base, models), settings)
            result = direct.summary
            merged = merge_disentangled(base, models, weights, lam, delta=direct.delta, included=included, **common)
        else:
            result = solve_reduced(gram, settings)
            merged = merge_disentangled(base, models, weights, lam, coefficients=result.coefficients,
                                        included=included, **common)
        if report is not None:
            report.record_scope(name, {"tensors": [name], "models": [str(e.id) for e in entries], **result.summary()})
        return merged


awd_merge_method = AWDMerge()
