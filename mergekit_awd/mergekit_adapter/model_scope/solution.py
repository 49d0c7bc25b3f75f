"""The solution of a model-wide scope, handed to the merge tasks of pass 2 in their ``MergeContext``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Sequence, Tuple

import torch

from mergekit_awd.core.awd_delta import Delta

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

    def delta_for(self, ids: Sequence[Hashable], tensor: str) -> Delta:
        """The scope's δ for one tensor whose inputs are ``ids`` (its figures are the scope's)."""
        return Delta(self.included_for(ids, tensor), coefficients=self.coefficients_for(ids, tensor))
