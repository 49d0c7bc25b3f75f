"""A method's validation grid: its configurations (everything but λ) and its λ values.

Each configuration costs one CLI merge (at λ = 1), each λ one validation scoring (``lambda_path``).
The tracks' own grids: ``benchmarks.quality.grids`` and ``benchmarks.llm.grids``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Sequence, Tuple

from benchmarks.harness.merging import MergeSpec

WEIGHT = {"weight": 1.0}


@dataclass(frozen=True)
class MethodGrid:
    name: str                      # row name in the results
    configurations: Tuple[MergeSpec, ...]
    lambdas: Tuple[float, ...]


def specs(method: str, shared: Sequence[Dict], per_model: Sequence[Dict]) -> Tuple[MergeSpec, ...]:
    """Every (shared, per-model) combination, each model at weight 1."""
    return tuple(MergeSpec(method, dict(s), {**WEIGHT, **m}) for s in shared for m in per_model)
