"""Choosing a method's settings on the validation split (never on test)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Sequence

from benchmarks.harness.experiment import Experiment, Sweep
from benchmarks.harness.grids import MethodGrid
from benchmarks.harness.merging import MergeSpec
from benchmarks.harness.scoring import summarise


@dataclass(frozen=True)
class GridPoint:
    """One (configuration, λ) of a method's grid with its validation scores."""

    spec: MergeSpec                # λ included
    tasks: Dict[str, float]
    avg: float
    normalized_avg: float
    merge_seconds: float           # of the λ = 1 CLI merge this point was derived from

    def to_json(self) -> Dict[str, Any]:
        return {"params": self.spec.label(), "tasks": self.tasks, "avg": self.avg,
                "normalized_avg": self.normalized_avg}


def grid_points(sweep: Sweep, individual: Mapping[str, float], tasks: Sequence[str]) -> List[GridPoint]:
    points = []
    for lam, scores in sweep.scores.items():
        summary = summarise(scores, individual, tasks)
        points.append(GridPoint(sweep.spec.with_lambda(lam), dict(scores), summary["avg"],
                                summary["normalized_avg"], sweep.merge_seconds))
    return points


def run_grid(bench: Experiment, grid: MethodGrid, individual_validation: Mapping[str, float],
             log=print) -> List[GridPoint]:
    """Validation scores of every (configuration, λ) of ``grid``."""
    points: List[GridPoint] = []
    for spec in grid.configurations:
        sweep = bench.sweep(spec, grid.lambdas, bench.tasks, "validation")
        new = grid_points(sweep, individual_validation, bench.tasks)
        best = max(new, key=lambda p: p.normalized_avg)
        log(f"[grid] {grid.name} {spec.label()}: merge {sweep.merge_seconds:.0f} s, best λ "
            f"{best.spec.parameters['lambda']} -> validation normalized {best.normalized_avg:.4f}")
        points.extend(new)
    return points


def best_point(points: Sequence[GridPoint]) -> GridPoint:
    """Highest validation normalized accuracy; ties go to the earlier grid point."""
    best = points[0]
    for point in points[1:]:
        if point.normalized_avg > best.normalized_avg:
            best = point
    return best
