"""The solution of a model-wide scope, handed to the merge tasks of pass 2 through a context variable."""

from __future__ import annotations

import contextvars
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Hashable, Iterator, Optional, Sequence, Tuple

import torch

from mergekit_awd.errors import PlanError


@dataclass(frozen=True)
class ScopeSolution:
    """Coefficients β of a model-scope δ = Σ_k β_k τ_k, in the order of ``ids``; ``included``
    marks the task vectors that are non-zero over the scope."""

    key: str
    ids: Tuple[Hashable, ...]
    coefficients: torch.Tensor
    included: torch.Tensor

    def _positions(self, ids: Sequence[Hashable], tensor: str) -> list:
        try:
            return [self.ids.index(i) for i in ids]
        except ValueError:
            raise PlanError(
                f"{tensor}: its inputs {list(ids)} differ from those of model scope {self.key!r}", tensor=tensor
            ) from None

    def coefficients_for(self, ids: Sequence[Hashable], tensor: str) -> torch.Tensor:
        """β in the order of ``ids``."""
        return self.coefficients[self._positions(ids, tensor)]

    def included_for(self, ids: Sequence[Hashable], tensor: str) -> torch.Tensor:
        """Which of ``ids`` took part in the scope's solve (non-zero over the scope)."""
        return self.included[self._positions(ids, tensor)]


_SCOPE_SOLUTION: contextvars.ContextVar[Optional[ScopeSolution]] = contextvars.ContextVar(
    "mergekit_awd_scope_solution", default=None
)


@contextmanager
def scope_solution(solution: ScopeSolution) -> Iterator[None]:
    """Make ``solution`` the model-scope δ for merges run inside this block (this thread)."""
    token = _SCOPE_SOLUTION.set(solution)
    try:
        yield
    finally:
        _SCOPE_SOLUTION.reset(token)


def current_scope_solution() -> Optional[ScopeSolution]:
    """The model-scope solution of the merge task running in this thread, or None outside one."""
    return _SCOPE_SOLUTION.get()
