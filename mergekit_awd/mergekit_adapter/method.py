"""What every merge method of this package brings to mergekit and to the rest of the package.

``PackageMergeMethod`` is a mergekit ``GroupMergeMethod`` that

* generates its ``MergeMethodSpec`` from the method's core settings dataclass (``specs``);
* runs one prologue for every method: an empty group returns the base, the tensor is named, the
  settings are bound, the per-model weights read, and one finite-input policy applies (below);
* describes itself once, so that the runner, report, card, planner, tune, inspect and the CLI hold
  no method names and every list of methods is derived from the registry: ``report_filename``,
  ``card_parameter_labels`` and ``card_parts`` (the card), ``plans_model_scope`` (the planner),
  ``linear_in_lambda`` (tune's λ path), ``combinable`` (``awd``'s ``combine`` choices), ``matrix_work``
  (the cost model, for the time estimate) and ``dynamic_choices`` (choices drawn from the registry);
* receives the merge's ``MergeContext`` (report, progress, model-scope solution) as an argument.

Finite inputs.  NaN or Inf in an input is an error naming the tensor and the model.  A method
whose math cannot run on them (``inputs_must_be_finite``: TSV's SVDs) scans its inputs first;
the others check only their output (a non-finite output is where a non-finite input shows), scan
the inputs to name the model then, and let ``check_finite: false`` merge anyway.

A new method: one core module (math + settings dataclass), one subclass here with its
``merge_tensor``, one line in ``registration.our_methods``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from mergekit.merge_methods.base import (
    BasePolicy, GroupMergeMethod, InputContract, MergeMethodSpec, ParameterSpec, TensorGroup,
)

from mergekit_awd.core.settings import check_choice, from_parameters, setting_fields
from mergekit_awd.errors import TensorError
from mergekit_awd.mergekit_adapter.card_parts import CardPart
from mergekit_awd.mergekit_adapter.context import CONTEXT_PARAMETER, DETACHED, MergeContext
from mergekit_awd.mergekit_adapter.report import MergeReport
from mergekit_awd.mergekit_adapter.specs import parameter_specs
from mergekit_awd.progress import PHASE_MERGE


def input_labels(group: TensorGroup) -> List[Tuple[str, torch.Tensor]]:
    """(label, tensor) of every input of a group; the base is marked as such."""
    return [(f"{e.id}{' (base model)' if e.is_base else ''}", e.tensor) for e in group.entries]


def require_finite(tensor_name: str, inputs: Sequence[Tuple[str, torch.Tensor]], opt_out: bool = True) -> None:
    """Raise naming the tensor and the model when an input holds NaN or Inf."""
    for label, tensor in inputs:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise TensorError(
                f"{tensor_name}: non-finite values (NaN or Inf) in {label}; fix the checkpoint"
                + (", or set check_finite: false to merge anyway" if opt_out else ""),
                tensor=tensor_name, model=label,
            )


class PackageMergeMethod(GroupMergeMethod):
    """A merge method of this package (see the module docstring)."""

    name: ClassVar[str]
    pretty_name: ClassVar[str]
    reference_url: ClassVar[str]
    settings_class: ClassVar[type]
    weight_description: ClassVar[str]
    group_notes: ClassVar[Dict[str, str]] = {}
    report_filename: ClassVar[str]
    inputs_must_be_finite: ClassVar[bool] = False
    plans_model_scope: ClassVar[bool] = False
    # (parameter, how the card names it), in the order the card lists them first
    card_parameter_labels: ClassVar[Tuple[Tuple[str, str], ...]] = ()
    # what the card shows after the parameter table, in order (drawn by ``presentation.card_sections``)
    card_parts: ClassVar[Tuple[CardPart, ...]] = ()
    # θ(λ) = θ_base + λ·D with D independent of λ: tune moves λ without re-merging (``tools.tune``)
    linear_in_lambda: ClassVar[bool] = True
    # merges task vectors, so ``awd`` can hand it the disentangled ones (``combine: NAME``)
    combinable: ClassVar[bool] = False
    # tune --methods: the λ grid tried for this method (tune's syntax; None: tune's default grid)
    lambda_grid: ClassVar[Optional[str]] = None

    def __init__(self) -> None:
        self._spec: Optional[MergeMethodSpec] = None
        self.registry: Tuple["PackageMergeMethod", ...] = ()

    def join_registry(self, registry: Tuple["PackageMergeMethod", ...]) -> None:
        """The package's methods, this one among them (``registration``): what ``dynamic_choices``
        may draw from, handed down rather than imported (the registry imports the methods)."""
        self.registry = registry
        self._spec = None

    @property
    def spec(self) -> MergeMethodSpec:
        """mergekit's spec, generated from the settings dataclass on first use (when every method is
        registered, so that choices drawn from the registry, ``dynamic_choices``, are complete)."""
        if self._spec is None:
            self._spec = MergeMethodSpec(
                name=self.name,
                pretty_name=self.pretty_name,
                reference_url=self.reference_url,
                parameters=parameter_specs(self.settings_class, self.weight_description, self.group_notes,
                                           self.dynamic_choices()) + self.extra_parameter_specs(),
                contract=InputContract(base=BasePolicy.REQUIRED, min_non_base=1),
            )
        return self._spec

    def dynamic_choices(self) -> Dict[str, Tuple[Any, ...]]:
        """Choices of string settings that come from the registry, by YAML name (``awd``'s ``combine``)."""
        return {}

    # ------------------------------------------------------------------ settings

    def extra_parameter_specs(self) -> Tuple[ParameterSpec, ...]:
        """Parameters beyond the settings dataclass's (``awd``'s borrowed sparsification ones)."""
        return ()

    def resolved_parameters(self, shared: Dict[str, Any]) -> Dict[str, Any]:
        """The shared parameters as the report and card show them (defaults filled in)."""
        return shared

    def parameter_use_error(self, shared: Mapping[str, Any], given: Sequence[str]) -> Optional[str]:
        """Why parameters ``given`` (names set anywhere in the YAML) do nothing with the shared
        ``shared`` ones, or None (checked before anything loads)."""
        return None

    def settings(self, parameters: Mapping[str, Any]) -> Any:
        """The method's settings dataclass from bound (or YAML) parameters; defaults for the rest
        (``InvalidSettingError`` for a value outside its range, choices or a refused combination)."""
        settings = from_parameters(self.settings_class, parameters)
        for name, choices in self.dynamic_choices().items():
            check_choice(name, getattr(settings, next(f.attribute for f in setting_fields(self.settings_class)
                                                      if f.name == name)), choices)
        return settings


    # ------------------------------------------------------------------ merging

    def merge_group(self, group: TensorGroup, /, **parameters: Any) -> torch.Tensor:
        """mergekit's entry: ``parameters`` holds the merge's ``MergeContext`` under ``CONTEXT_PARAMETER``
        when our runner planned the merge (``context``), none under plain mergekit-yaml."""
        context = parameters.pop(CONTEXT_PARAMETER, DETACHED)
        merged = self.merge_in_context(group, context, **parameters)
        context.advance(PHASE_MERGE)
        return merged

    def merge_in_context(self, group: TensorGroup, context: MergeContext, /, **parameters: Any) -> torch.Tensor:
        """``merge_group`` without advancing the progress bar (also when another method runs this one)."""
        base = group.base.tensor
        entries = group.non_base
        if not entries:
            return base
        name = group.metadata.name or "<unnamed tensor>"
        settings = self.settings(parameters)
        if self.inputs_must_be_finite:
            require_finite(name, input_labels(group), opt_out=False)
        weights = [parameters["weight"][e.id] for e in entries]
        merged = self.merge_tensor(group, name, settings, weights, context, parameters)
        if (not self.inputs_must_be_finite and getattr(settings, "check_finite", True)
                and not bool(torch.isfinite(merged).all())):
            # NaN/Inf in any input used by the merge reaches the output; only then are the
            # inputs scanned to name the model.
            require_finite(name, input_labels(group))
            raise TensorError(f"{name}: the merged values overflow {merged.dtype} (inputs are finite)", tensor=name)
        return merged

    def merge_tensor(self, group: TensorGroup, name: str, settings: Any, weights: List[float],
                     context: MergeContext, parameters: Mapping[str, Any]) -> torch.Tensor:
        """The merged tensor for a group with at least one non-base entry (``weights`` in entry
        order; ``context``: the merge's report and solution; ``parameters``: every bound parameter,
        per-model ones by entry id)."""
        raise NotImplementedError


class MatrixMergeMethod(PackageMergeMethod):
    """A method that merges each selected 2-D tensor's task matrices at once (``merge_matrices``,
    a core function returning ``.delta`` and ``.summary()``, recorded under ``report_section``) and
    every other tensor by the mean task vector (``averaged``): θ_base + λ · merged, λ = ``settings.lam``."""

    report_section: ClassVar[str]
    card_title: ClassVar[str]  # the card section of the report_section's means
    card_intro: ClassVar[str] = ""  # its first paragraph (with the ``{fields}`` its ``CardPart`` fills in)
    card_parts = (CardPart.SECTION_MEANS,)
    weight_description = "w_i, per-model weight applied to the task vector"
    inputs_must_be_finite = True  # an SVD or a solve cannot run on NaN/Inf
    combinable = True  # merges any task vectors, the disentangled ones of ``awd`` too
    lambda_grid = "lambda=0.25:3.0:0.25"  # a merged update of the size of one task vector: λ about 1 and above

    def merge_matrices(self, name: str, task_vectors: torch.Tensor, weights: List[float], settings: Any,
                       report: Optional[MergeReport]) -> Any:
        raise NotImplementedError

    # the options that make this method faster, named by the up-front time estimate
    faster_options: ClassVar[Tuple[str, ...]] = ("--cuda",)

    def matrix_work(self, rows: int, cols: int, tasks: int, settings: Any) -> Dict[str, float]:
        """Arithmetic of ``merge_matrices`` on K [rows, cols] matrices (``pipeline.estimate`` units:
        ``svd`` = rows·cols·min(rows, cols), ``matmul`` = multiply-adds); {} when negligible."""
        return {}

    def report_entry(self, settings: Any, result: Any) -> Dict[str, Any]:
        """What ``report_section`` records for one merged matrix."""
        return result.summary()

    def merge_tensor(self, group: TensorGroup, name: str, settings: Any, weights: List[float],
                     context: MergeContext, parameters: Mapping[str, Any]) -> torch.Tensor:
        from mergekit_awd.core.selection import is_task_matrix
        from mergekit_awd.core.task_vectors import mean_task_vector, task_vector_stack

        report = context.report
        base = group.base.tensor
        weights = [float(w) for w in weights]
        task_vectors = task_vector_stack(base, [e.tensor for e in group.non_base], device=base.device)
        if is_task_matrix(name, base.ndim, settings.select, group.metadata.vocabulary_axis):
            result = self.merge_matrices(name, task_vectors, weights, settings, report)
            merged_delta = result.delta
            if report is not None:
                report.record(self.report_section, name, self.report_entry(settings, result))
        else:
            merged_delta = mean_task_vector(task_vectors, weights)
            if report is not None:
                report.record("averaged", name, {"tasks": len(weights)})
        return (base.to(merged_delta.dtype) + settings.lam * merged_delta).to(base.dtype)


__all__ = ["PackageMergeMethod", "MatrixMergeMethod", "input_labels", "require_finite"]
