"""Planning ``scope: model``: one δ over every selected tensor (docs/awd-solver.md, Fact 3).

Graph, per scope (tensors sharing the same solver settings):

    pass 1  LoadTensor ─> GatherTensors ─> ScopeGramTask        (K×K Gram of one tensor)
                              all ScopeGramTask ─> SolveScopeTask   (ΣG, one K-dim solve)
    pass 2  DeferredLoadTensor ─(after solve)─> DeferredGatherTensors ─> ExecuteInContext (with the solution)

Pass-2 loads are distinct tasks that depend on the solve, so mergekit's scheduler cannot run
them early: each tensor is read once per pass and released after use, never all at once.
Dependencies on the solve are held as private attributes (with a small ``scope_key`` field for
identity) so that hashing a task stays O(1) rather than walking the whole scope.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Tuple

import torch
from mergekit.architecture import WeightInfo
from mergekit.common import ModelReference
from mergekit.graph import Task
from mergekit.io.tasks import GatherTensors, LoadTensor
from mergekit.merge_methods.task_adapter import ExecuteMergeMethodTask
from pydantic import PrivateAttr

from mergekit_awd.core.awd import SolverSettings
from mergekit_awd.core.awd_delta import solve_model_scope
from mergekit_awd.core.selection import is_disentangled, may_be_disentangled
from mergekit_awd.core.settings import from_parameters, setting_fields
from mergekit_awd.core.task_vectors import gram_of_task_vectors, require_same_shape
from mergekit_awd.errors import ConfigError, InvalidSettingError, TensorError
from mergekit_awd.mergekit_adapter.context import DETACHED, ExecuteInContext, MergeContext
from mergekit_awd.mergekit_adapter.method import PackageMergeMethod, require_finite
from mergekit_awd.mergekit_adapter.model_scope.solution import ScopeSolution
from mergekit_awd.progress import PHASE_GRAM


class DeferredLoadTensor(LoadTensor):
    """``LoadTensor`` that may only run after another task (the scope's solve)."""

    scope_key: str
    _after: Optional[Task] = PrivateAttr(default=None)

    def arguments(self) -> Dict[str, Task]:
        return {"after": self._after}

    def execute(self, after: Any = None) -> Optional[torch.Tensor]:
        return super().execute()


class DeferredGatherTensors(GatherTensors):
    """``GatherTensors`` whose loads wait for ``after``."""

    scope_key: str
    _after: Optional[Task] = PrivateAttr(default=None)

    @classmethod
    def wrap(cls, gather: GatherTensors, after: Task, scope_key: str) -> "DeferredGatherTensors":
        task = cls(scope_key=scope_key, **{f: getattr(gather, f) for f in GatherTensors.model_fields})
        task._after = after
        return task

    def arguments(self) -> Dict[str, Task]:
        deferred = {}
        for key, load in super().arguments().items():
            task = DeferredLoadTensor(
                scope_key=self.scope_key, **{f: getattr(load, f) for f in LoadTensor.model_fields}
            )
            task._after = self._after
            deferred[key] = task
        return deferred


def _non_base_order(task: ExecuteMergeMethodTask) -> Tuple[ModelReference, ...]:
    return tuple(m for m in task.model_order if m != task.base_model)


class ScopeGramTask(Task[Optional[torch.Tensor]]):
    """Pass 1: the K×K Gram matrix of one tensor's task vectors (float64, CPU), or None."""

    source: ExecuteMergeMethodTask
    _context: MergeContext = PrivateAttr(default=DETACHED)

    def arguments(self) -> Dict[str, Task]:
        return {"tensors": self.source.gather_tensors}

    def group_label(self) -> Optional[str]:
        return self.source.group_label()

    def uses_accelerator(self) -> bool:
        return True

    def execute(self, tensors: Dict[ModelReference, torch.Tensor], **_: Any) -> Optional[torch.Tensor]:
        gram = self._gram(tensors)
        self._context.advance(PHASE_GRAM)
        return gram

    def _gram(self, tensors: Dict[ModelReference, torch.Tensor]) -> Optional[torch.Tensor]:
        name = self.source.output_weight.name
        base = tensors.get(self.source.base_model)
        order = _non_base_order(self.source)
        missing = [str(m) for m in order if m not in tensors]
        if base is None or missing:
            raise TensorError(f"{name}: missing in {missing or [str(self.source.base_model)]}", tensor=name)
        if not base.is_floating_point() or not is_disentangled(
            name, base.ndim, self.source.parameters["select"], self.source.output_weight.vocabulary_axis
        ):
            return None
        require_same_shape(name, self.source.base_model, base, [(m, tensors[m]) for m in order])
        gram = gram_of_task_vectors(base, [tensors[m] for m in order])
        if self.source.parameters["check_finite"] and not bool(torch.isfinite(gram).all()):
            # NaN/Inf in any input reaches the Gram matrix; scan the inputs to name the model
            require_finite(name, [(f"{self.source.base_model} (base model)", base)] + [(str(m), tensors[m]) for m in order])
        return gram


class SolveScopeTask(Task[ScopeSolution]):
    """Sum the per-tensor Gram matrices of a scope and solve for β once."""

    scope_key: str
    grams: Tuple[ScopeGramTask, ...]
    ids: Tuple[ModelReference, ...]
    settings: Tuple[Tuple[str, Any], ...]

    _context: MergeContext = PrivateAttr(default=DETACHED)

    def arguments(self) -> Dict[str, Task]:
        return {f"gram_{i}": g for i, g in enumerate(self.grams)}

    def priority(self) -> int:
        return 100

    def execute(self, **grams: Optional[torch.Tensor]) -> ScopeSolution:
        started = time.perf_counter()
        named = {task.source.output_weight.name: grams[f"gram_{i}"] for i, task in enumerate(self.grams)}
        scope = solve_model_scope(named, len(self.ids), from_parameters(SolverSettings, dict(self.settings)))
        self._context.note(f"δ of scope {self.scope_key} solved over {len(scope.tensors)} tensors "
                           f"({time.perf_counter() - started:.1f} s)")
        if self._context.report is not None:
            self._context.report.record_scope(self.scope_key, {
                "tensors": scope.tensors, "models": [str(m) for m in self.ids],
                "non_finite_tensors": scope.non_finite_tensors, **scope.summary})
        return ScopeSolution(key=self.scope_key, ids=self.ids, coefficients=scope.coefficients,
                             included=scope.included)


def plan_model_scopes(tensors: List[Tuple[WeightInfo, Task]], method: PackageMergeMethod, context: MergeContext
                      ) -> List[Tuple[WeightInfo, Task]]:
    """Rewrite ``method``'s planned tensors with ``scope: model`` into the two-pass graph above, every
    task of it holding the merge's ``context``."""
    solver_names = [item.name for item in setting_fields(SolverSettings)]
    scopes: "OrderedDict[Tuple, List[int]]" = OrderedDict()
    for index, (weight, task) in enumerate(tensors):
        if not isinstance(task, ExecuteMergeMethodTask) or task.method_name != method.spec.name:
            continue
        params = task.parameters
        if params["scope"] != "model" or not may_be_disentangled(weight.name, params["select"], weight.vocabulary_axis):
            continue
        try:  # the settings refuse the combinations no scope can solve (e.g. solver: direct)
            method.settings(dict(params.items()))
        except InvalidSettingError as error:
            raise ConfigError(f"{weight.name}: {error}") from None
        if type(task.gather_tensors) is not GatherTensors:
            raise ConfigError(
                f"{weight.name}: scope: model cannot disentangle tensors whose vocabulary is "
                "re-mapped by a tokenizer setting; exclude them with select or use scope: tensor"
            )
        key = (_non_base_order(task),) + tuple((n, params[n]) for n in solver_names)
        scopes.setdefault(key, []).append(index)

    result = list(tensors)
    for number, (key, indices) in enumerate(scopes.items()):
        ids, settings = key[0], key[1:]
        scope_key = "model" if len(scopes) == 1 else "model[" + ", ".join(f"{n}={v}" for n, v in settings) + "]"
        grams = tuple(ScopeGramTask(source=tensors[i][1]) for i in indices)
        solve = SolveScopeTask(scope_key=scope_key, grams=grams, ids=ids, settings=settings)
        for task in (solve, *grams):
            task._context = context
        for i in indices:
            weight, task = tensors[i]
            gather = DeferredGatherTensors.wrap(task.gather_tensors, solve, scope_key)
            result[i] = (weight, ExecuteInContext.wrap(task, context, solve=solve, gather=gather, scope_key=scope_key))
    return result
