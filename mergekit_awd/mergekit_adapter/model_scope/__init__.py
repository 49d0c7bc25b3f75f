"""Everything ``scope: model`` needs: the two-pass plan, its deferred tasks and the solution.

A method that solves one quantity over many tensors (AWD's model-wide δ) cannot run inside
mergekit's tensor-at-a-time merge: ``plan_model_scopes`` rewrites its planned tasks into a graph
that sums per-tensor Gram matrices (pass 1), solves once, and merges each tensor with the solution
in its ``MergeContext`` (pass 2).
"""

from mergekit_awd.mergekit_adapter.model_scope.solution import ScopeSolution

# ``tasks.plan_model_scopes`` is imported where the planner needs it: the tasks use the methods.
__all__ = ["ScopeSolution"]
