"""Planner hook: mergekit's ``MergePlanner`` plus the model-scope rewrite for our methods."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import mergekit.merge
from mergekit.plan import MergePlanner

from mergekit_awd.mergekit_adapter.model_scope import plan_model_scopes

MODEL_SCOPE_METHODS = ("awd",)


class AWDMergePlanner(MergePlanner):
    """Plans exactly as mergekit does, then rewrites model-scope tensors (see ``model_scope``)."""

    def _plan(self) -> None:
        super()._plan()
        if self.config.merge_method in MODEL_SCOPE_METHODS:
            self._tensors = plan_model_scopes(self._tensors, self.config.merge_method)


@contextmanager
def awd_planner() -> Iterator[None]:
    """Let ``mergekit.merge.run_merge`` plan with ``AWDMergePlanner`` inside this block."""
    original = mergekit.merge.MergePlanner
    mergekit.merge.MergePlanner = AWDMergePlanner
    try:
        yield
    finally:
        mergekit.merge.MergePlanner = original
