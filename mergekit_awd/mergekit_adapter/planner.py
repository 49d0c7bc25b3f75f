"""Our planner: mergekit's ``MergePlanner`` with a fix for optional aliased weights, the model-scope
rewrite for our methods, and the merge's ``MergeContext`` put into each task of our method.  The
runner constructs it (``pipeline.mergekit_run``); nothing of mergekit is patched for it."""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Tuple

from mergekit.architecture import WeightInfo
from mergekit.common import ModelReference
from mergekit.config import ConfigReader
from mergekit.graph import Task
from mergekit.io.tasks import LoaderCache
from mergekit.merge_methods.task_adapter import ExecuteMergeMethodTask
from mergekit.plan import MergePlanner

from mergekit_awd.mergekit_adapter.context import ExecuteInContext, MergeContext
from mergekit_awd.mergekit_adapter.model_scope.tasks import plan_model_scopes
from mergekit_awd.mergekit_adapter.registration import method_for
from mergekit_awd.progress import PHASE_GRAM, PHASE_MERGE

LOG = logging.getLogger(__name__)


def optional_weight_present(weights_in: List[WeightInfo], models: List[ModelReference]) -> bool:
    """Whether any input model holds a weight under its name or one of its aliases."""
    for model, weight in zip(models, weights_in):
        names = LoaderCache().get(model).index.tensor_paths
        if any(name in names for name in (weight.name, *(weight.aliases or ()))):
            return True
    return False


class AWDMergePlanner(MergePlanner):
    """Plans exactly as mergekit does, with two additions.

    * mergekit 0.1.5 checks optional weights with ``[w.name] + (w.aliases or [])``, which raises
      for every optional weight that has aliases (``aliases`` is a tuple; BERT's
      ``embeddings.position_ids``).  The same check is made here tuple-safely; mergekit then plans
      the weight from a non-optional copy (skipping only that check) and the planned task gets
      the original optional ``WeightInfo`` back, so saving behaves as mergekit intends.
    * Given the merge's ``context``, model-scope tensors of our methods (``plans_model_scope``) are
      rewritten into the two-pass graph (``model_scope``, unless ``rewrite_model_scopes`` is False)
      and every task of our method carries the context (``context.ExecuteInContext``).  ``inspect``
      plans the same tensors with the same fix and no context, and reads them itself.
    """

    rewrite_model_scopes: bool = True

    def __init__(self, *args: Any, context: Optional[MergeContext] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.context = context

    def plan_tensor(self, weight: WeightInfo, weights_in: List[WeightInfo], models: List[ModelReference],
                    cfg_reader: ConfigReader) -> None:
        if not weight.optional:
            return super().plan_tensor(weight, weights_in, models, cfg_reader)
        if not optional_weight_present(weights_in, models):
            LOG.info("Skipping optional weight %s", weight.name)
            return None
        planned = len(self._tensors)
        super().plan_tensor(weight.model_copy(update={"optional": False}), weights_in, models, cfg_reader)
        if len(self._tensors) > planned:
            _, task = self._tensors[-1]
            if isinstance(task, ExecuteMergeMethodTask):
                task = task.model_copy(update={"output_weight": weight})
            self._tensors[-1] = (weight, task)
        return None

    def _plan(self) -> None:
        super()._plan()
        method = method_for(self.config.merge_method)
        if method is None or self.context is None:
            return
        if self.rewrite_model_scopes and method.plans_model_scope:
            self._tensors = plan_model_scopes(self._tensors, method, self.context)
        self._tensors = [(weight, _in_context(task, method.spec.name, self.context)) for weight, task in self._tensors]
        if self.context.progress is not None:
            self.context.progress.expect(planned_phases(self._tensors, method.spec.name))


def _in_context(task: Task, method_name: str, context: MergeContext) -> Task:
    """A merge task of our method, made to carry the merge's context (model-scope ones already do)."""
    if isinstance(task, ExecuteInContext) or not isinstance(task, ExecuteMergeMethodTask) \
            or task.method_name != method_name:
        return task
    return ExecuteInContext.wrap(task, context)


def planned_phases(tensors: List[Tuple[WeightInfo, Task]], method_name: str) -> Dict[str, int]:
    """Steps of each phase of a planned merge: Gram matrices of model scopes, then merged tensors."""
    merges = [task for _, task in tensors
              if isinstance(task, ExecuteMergeMethodTask) and task.method_name == method_name]
    scopes = {id(task.solution_task): task.solution_task for task in merges
              if isinstance(task, ExecuteInContext) and task.solution_task is not None}
    return {PHASE_GRAM: sum(len(solve.grams) for solve in scopes.values()), PHASE_MERGE: len(merges)}
