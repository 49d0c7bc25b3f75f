"""Planning ``scope: model``: one δ over every selected tensor (docs/awd-solver.md, Fact 3).

Graph, per scope (tensors sharing the same solver settings):

    pass 1  LoadTensor ─> GatherTensors ─> ScopeGramTask        (K×K Gram of one tensor)
                              all ScopeGramTask ─> SolveScopeTask   (ΣG, one K-dim solve)
    pass 2  DeferredLoadTensor ─(after solve)─> DeferredGatherTensors ─> ExecuteWithScopeSolution

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

from mergekit_awd.core.awd import SolverSettings, solve_reduced
from mergekit_awd.core.selection import is_disentangled, may_be_disentangled
from mergekit_awd.core.settings import from_parameters, setting_fields
from mergekit_awd.core.task_vectors import gram_of_task_vectors, require_same_shape
from mergekit_awd.errors import ConfigError, TensorError
from mergekit_awd.mergekit_adapter.method import PackageMergeMethod, require_finite
from mergekit_awd.mergekit_adapter.model_scope.solution import ScopeSolution, scope_solution
from mergekit_awd.mergekit_adapter.report import active_report
from mergekit_awd.progress import PHASE_GRAM, active_progress


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

    def arguments(self) -> Dict[str, Task]:
        return {"tensors": self.source.gather_tensors}

    def group_label(self) -> Optional[str]:
        return self.source.group_label()

    def uses_accelerator(self) -> bool:
        return True

    def execute(self, tensors: Dict[ModelReference, torch.Tensor], **_: Any) -> Optional[torch.Tensor]:
        gram = self._gram(tensors)
        progress = active_progress()
        if progress is not None:
            progress.advance(PHASE_GRAM)
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

    def arguments(self) -> Dict[str, Task]:
        return {f"gram_{i}": g for i, g in enumerate(self.grams)}

    def priority(self) -> int:
        return 100

    def execute(self, **grams: Optional[torch.Tensor]) -> ScopeSolution:
        k = len(self.ids)
        total = torch.zeros((k, k), dtype=torch.float64)
        tensors, non_finite = [], []
        for index, gram_task in enumerate(self.grams):
            gram = grams[f"gram_{index}"]
            if gram is None:
                continue
            name = gram_task.source.output_weight.name
            if not bool(torch.isfinite(gram).all()):
                # only reachable with check_finite: false; such a tensor gets the scope's δ
                # without shaping it, and its non-finite inputs stay where they are
                non_finite.append(name)
                continue
            total += gram
            tensors.append(name)
        started = time.perf_counter()
        result = solve_reduced(total, from_parameters(SolverSettings, dict(self.settings)))
        progress = active_progress()
        if progress is not None:
            progress.note(f"δ of scope {self.scope_key} solved over {len(tensors)} tensors "
                          f"({time.perf_counter() - started:.1f} s)")
        report = active_report()
        if report is not None:
            report.record_scope(self.scope_key, {"tensors": tensors, "models": [str(m) for m in self.ids],
                                                 "non_finite_tensors": non_finite, **result.summary()})
        return ScopeSolution(key=self.scope_key, ids=self.ids, coefficients=result.coefficients,
                             included=total.diagonal() > 0)


class ExecuteWithScopeSolution(ExecuteMergeMethodTask):
    """Pass 2: mergekit's own merge task, run with the scope's β in context."""

    scope_key: str
    _solution_task: Optional[SolveScopeTask] = PrivateAttr(default=None)

    @classmethod
    def wrap(cls, task: ExecuteMergeMethodTask, solve: SolveScopeTask) -> "ExecuteWithScopeSolution":
        fields = {f: getattr(task, f) for f in ExecuteMergeMethodTask.model_fields}
        fields["gather_tensors"] = DeferredGatherTensors.wrap(task.gather_tensors, solve, solve.scope_key)
        wrapped = cls(scope_key=solve.scope_key, **fields)
        wrapped._solution_task = solve
        return wrapped

    def arguments(self) -> Dict[str, Task]:
        return {"tensors": self.gather_tensors, "solution": self._solution_task}

    def execute(self, tensors: Dict[ModelReference, torch.Tensor], solution: ScopeSolution = None, **_: Any):
        with scope_solution(solution):
            return super().execute(tensors)


def plan_model_scopes(tensors: List[Tuple[WeightInfo, Task]], method: PackageMergeMethod
                      ) -> List[Tuple[WeightInfo, Task]]:
    """Rewrite ``method``'s planned tensors with ``scope: model`` into the two-pass graph above."""
    solver_names = [item.name for item in setting_fields(SolverSettings)]
    scopes: "OrderedDict[Tuple, List[int]]" = OrderedDict()
    for index, (weight, task) in enumerate(tensors):
        if not isinstance(task, ExecuteMergeMethodTask) or task.method_name != method.spec.name:
            continue
        params = task.parameters
        if params["scope"] != "model" or not may_be_disentangled(weight.name, params["select"], weight.vocabulary_axis):
            continue
        if params["solver"] == "direct":
            raise ConfigError(
                f"{weight.name}: solver: direct holds the full δ of its scope and works with "
                "scope: tensor only; use solver: reduced (exact, same δ) with scope: model"
            )
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
        solve = SolveScopeTask(
            scope_key=scope_key,
            grams=tuple(ScopeGramTask(source=tensors[i][1]) for i in indices),
            ids=ids,
            settings=settings,
        )
        for i in indices:
            weight, task = tensors[i]
            result[i] = (weight, ExecuteWithScopeSolution.wrap(task, solve))
    return result
