"""The ``tsv`` merge method (TSV-M, arXiv 2412.00081) as a mergekit ``GroupMergeMethod``.

YAML conventions as ``awd``: ``base_model``, ``models`` with a per-model ``weight`` (default 1)
and ``lambda`` as the final scale α.  Per output tensor:

* selected 2-D tensors (``select``, as for ``awd``; default: weights inside numbered blocks):
  Δ_M = U⊥ Σ V⊥ᵀ from the top-k singular triplets of each w_i τ_i (``core.tsv``), then
  θ = θ_base + λ Δ_M;
* every other tensor: θ = θ_base + λ (1/K) Σ_i w_i τ_i, the paper's mean of the task vectors.

``lambda`` defaults to 1.0, the paper's α for TSV-M (the official code's TSV-M configuration and
FusionBench's examples use α = 1.0).

``disentangle: true`` first removes AWD's redundant vector from each selected tensor (δ from
``core.awd.solve_reduced`` with the ``awd`` solver parameters and defaults) and runs TSV-M on
τ_i − δ.  Each selected tensor's Singular Task Interference is recorded in the report's
``interference`` section (``tsv_report.json`` when run through mergekit-awd); AWD solves under
``disentangle`` go to ``scopes`` as for ``awd``.

The same per-tensor STI for fine-tunes without merging, per layer and summed over the model, is
``mergekit-awd inspect`` (``inspect_merge``), which calls ``core.tsv.singular_task_interference``.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

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

from mergekit_awd.core.task_vectors import task_vector_stack
from mergekit_awd.core.tsv import (
    DEFAULT_FRACTION,
    DEFAULT_OVERSAMPLE,
    DEFAULT_POWER_ITERS,
    DEFAULT_SVD,
    TSVSettings,
    mean_task_vector,
    remove_redundant_vector,
    tsv_merge_matrices,
)
from mergekit_awd.mergekit_adapter.awd_method import (
    FiniteFloat,
    input_labels,
    require_finite,
    select_parameter_spec,
    solver_parameter_specs,
    solver_settings,
    weight_parameter_spec,
)
from mergekit_awd.mergekit_adapter.report import active_report
from mergekit_awd.mergekit_adapter.selection import is_disentangled

DEFAULT_LAMBDA = 1.0
TSV_PARAMETERS: Tuple[str, ...] = ("fraction", "svd", "oversample", "power_iters")


def tsv_parameter_specs() -> Tuple[ParameterSpec, ...]:
    """Parameters of ``tsv`` (mergekit conventions; AWD solver parameters for ``disentangle``)."""
    shared = ParameterScope.SHARED
    return (
        weight_parameter_spec("w_i, per-model weight applied to the task matrix before its SVD"),
        ParameterSpec("lambda", FiniteFloat, shared, default=DEFAULT_LAMBDA,
                      description="α, scale of the merged task vector (paper: 1.0)"),
        ParameterSpec("fraction", Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)], shared,
                      default=DEFAULT_FRACTION,
                      description="keep k = max(1, floor(fraction * rank / K)) singular triplets per task"),
        ParameterSpec("svd", Literal["exact", "lowrank"], shared, default=DEFAULT_SVD,
                      description="exact: torch.linalg.svd; lowrank: seeded randomized subspace iteration"),
        ParameterSpec("oversample", Annotated[int, Field(ge=0, le=100_000)], shared,
                      default=DEFAULT_OVERSAMPLE, description="extra sketch columns (svd: lowrank)"),
        ParameterSpec("power_iters", Annotated[int, Field(ge=0, le=1000)], shared,
                      default=DEFAULT_POWER_ITERS, description="power iterations (svd: lowrank)"),
        select_parameter_spec("which 2-D tensors get TSV-M (the rest: mean of task vectors)"),
        ParameterSpec("disentangle", bool, shared, default=False,
                      description="remove AWD's redundant vector δ before TSV-M"),
        *solver_parameter_specs(" (disentangle only)"),
    )


def tsv_settings(parameters: Dict[str, Any]) -> TSVSettings:
    """TSVSettings from bound ``tsv`` parameters."""
    return TSVSettings(**{name: parameters[name] for name in TSV_PARAMETERS})


def is_task_matrix(name: str, ndim: int, select: str, vocabulary_axis: Optional[int] = None) -> bool:
    """Whether TSV-M applies: a 2-D tensor chosen by ``select`` (``all`` adds no 1-D tensors here:
    a vector has no singular structure, so it is averaged like every other non-matrix)."""
    return ndim == 2 and is_disentangled(name, ndim, select, vocabulary_axis)


class TSVMerge(GroupMergeMethod):
    """TSV-Merge (arXiv 2412.00081), optionally after AWD disentanglement."""

    def __init__(self) -> None:
        self.spec = MergeMethodSpec(
            name="tsv",
            pretty_name="Task Singular Vectors Merge (TSV-M)",
            reference_url="https://arxiv.org/abs/2412.00081",
            parameters=tsv_parameter_specs(),
            contract=InputContract(base=BasePolicy.REQUIRED, min_non_base=1),
        )

    def merge_group(self, group: TensorGroup, /, **parameters: Any) -> torch.Tensor:
        base = group.base.tensor
        entries = group.non_base
        if not entries:
            return base
        name = group.metadata.name or "<unnamed tensor>"
        require_finite(name, input_labels(group), opt_out=False)
        weights = [float(parameters["weight"][e.id]) for e in entries]
        task_vectors = task_vector_stack(base, [e.tensor for e in entries], device=base.device)
        report = active_report()
        if not is_task_matrix(name, base.ndim, parameters["select"], group.metadata.vocabulary_axis):
            merged_delta = mean_task_vector(task_vectors, weights)
            if report is not None:
                report.record("averaged", name, {"tasks": len(entries)})
        else:
            if parameters["disentangle"]:
                task_vectors, solve = remove_redundant_vector(task_vectors, solver_settings(parameters))
                if report is not None:
                    report.record_scope(name, {"tensors": [name], **solve.summary()})
            try:
                result = tsv_merge_matrices(task_vectors, weights, tsv_settings(parameters))
            except (ValueError, RuntimeError) as error:
                raise type(error)(f"{name}: {error}") from error
            merged_delta = result.delta
            if report is not None:
                report.record("interference", name, {
                    "svd": parameters["svd"], "disentangled": bool(parameters["disentangle"]),
                    **result.summary()})
        merged = base.to(merged_delta.dtype) + parameters["lambda"] * merged_delta
        return merged.to(base.dtype)


tsv_merge_method = TSVMerge()
