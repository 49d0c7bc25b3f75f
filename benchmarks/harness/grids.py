"""A method's validation grid: its configurations (everything but λ) and its λ values.

Each configuration costs one CLI merge (at λ = 1), each λ one validation scoring (``lambda_path``).
With ``climb_from`` set, a configuration's λ are not all scored: a hill climb on the sorted grid from
that λ (``selection.climb``) scores the start, its neighbours and further points only while the score
rises — the best grid point of a unimodal validation curve for three or four scorings instead of all.
The tracks' own grids: ``benchmarks.quality.grids`` and ``benchmarks.llm.grids``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

from benchmarks.harness.merging import MergeSpec

WEIGHT = {"weight": 1.0}


@dataclass(frozen=True)
class MethodGrid:
    name: str                      # row name in the results
    configurations: Tuple[MergeSpec, ...]
    lambdas: Tuple[float, ...]
    climb_from: Optional[float] = None  # None: score every λ; else hill-climb from this grid λ


def specs(method: str, shared: Sequence[Dict], per_model: Sequence[Dict]) -> Tuple[MergeSpec, ...]:
    """Every (shared, per-model) combination, each model at weight 1."""
    return tuple(MergeSpec(method, dict(s), {**WEIGHT, **m}) for s in shared for m in per_model)
