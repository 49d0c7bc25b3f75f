"""What one merge hands each of our method calls besides the tensors: its report, its progress bar and
the model-scope δ, as one object that travels with the merge's tasks.

No process-wide slot and no context variable: the runner creates a ``MergeContext`` per merge and
gives it to the planner (``planner.AWDMergePlanner``), which wraps each task of our method into an
``ExecuteInContext`` holding it; when mergekit's executor runs the task, the context (with the scope's
solution, for ``scope: model``) reaches ``PackageMergeMethod.merge_group`` as the bound parameter
``merge_context`` — mergekit's own channel from a task to its method.  Two merges in one process,
on one thread or two, never meet.  A method run by plain ``mergekit-yaml`` gets ``DETACHED``: no
report, no bar, no model scope.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Dict, Optional

import immutables
import torch
from mergekit.common import ImmutableMap, ModelReference
from mergekit.merge_methods.task_adapter import ExecuteMergeMethodTask
from mergekit.graph import Task
from pydantic import PrivateAttr

from mergekit_awd.mergekit_adapter.model_scope.solution import ScopeSolution
from mergekit_awd.mergekit_adapter.report import MergeReport
from mergekit_awd.progress import MergeProgress

# The bound parameter that carries the context into ``merge_group`` (never a YAML parameter).
CONTEXT_PARAMETER = "merge_context"


@dataclass(frozen=True, eq=False)
class MergeContext:
    """One merge's report collector, progress bar and (inside a model scope's pass 2) its solution;
    compared and hashed by identity."""

    report: Optional[MergeReport] = None
    progress: Optional[MergeProgress] = None
    scope_solution: Optional[ScopeSolution] = None

    def with_solution(self, solution: Optional[ScopeSolution]) -> "MergeContext":
        return self if solution is None else replace(self, scope_solution=solution)

    def advance(self, phase: str) -> None:
        """One step of ``phase`` on the merge's bar (nothing without one)."""
        if self.progress is not None:
            self.progress.advance(phase)

    def note(self, message: str) -> None:
        """One line between the bars (nothing without a bar)."""
        if self.progress is not None:
            self.progress.note(message)


DETACHED = MergeContext()


class ExecuteInContext(ExecuteMergeMethodTask):
    """mergekit's merge task for one tensor of our method, run with the merge's context (and, for
    ``scope: model``, after the scope's solve, with its solution)."""

    scope_key: Optional[str] = None
    _context: MergeContext = PrivateAttr(default=DETACHED)
    _solution_task: Optional[Task] = PrivateAttr(default=None)

    @classmethod
    def wrap(cls, task: ExecuteMergeMethodTask, context: MergeContext, solve: Optional[Task] = None,
             gather: Optional[Any] = None, scope_key: Optional[str] = None) -> "ExecuteInContext":
        """``task`` with ``context``; ``solve``/``gather``/``scope_key``: the model-scope rewrite's."""
        fields = {f: getattr(task, f) for f in ExecuteMergeMethodTask.model_fields}
        if gather is not None:
            fields["gather_tensors"] = gather
        wrapped = cls(scope_key=scope_key, **fields)
        wrapped._context = context
        wrapped._solution_task = solve
        return wrapped

    @property
    def solution_task(self) -> Optional[Task]:
        return self._solution_task

    def arguments(self) -> Dict[str, Task]:
        arguments = {"tensors": self.gather_tensors}
        if self._solution_task is not None:
            arguments["solution"] = self._solution_task
        return arguments

    def execute(self, tensors: Dict[ModelReference, torch.Tensor], solution: Optional[ScopeSolution] = None,
                **_: Any) -> Optional[torch.Tensor]:
        context = self._context.with_solution(solution)
        parameters = ImmutableMap(immutables.Map({**dict(self.parameters.items()), CONTEXT_PARAMETER: context}))
        return ExecuteMergeMethodTask.execute(self.model_copy(update={"parameters": parameters}), tensors)


__all__ = ["CONTEXT_PARAMETER", "MergeContext", "DETACHED", "ExecuteInContext"]
