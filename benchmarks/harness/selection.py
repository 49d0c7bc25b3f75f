"""Choosing a method's settings on the validation split (never on test)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Sequence

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
    """Validation scores of every (configuration, λ) of ``grid`` (of the climbed λ with ``climb_from``)."""
    points: List[GridPoint] = []
    for spec in grid.configurations:
        if grid.climb_from is None:
            new = grid_points(bench.sweep(spec, grid.lambdas, bench.tasks, "validation"), individual_validation,
                              bench.tasks)
        else:
            new = climbed_points(bench, spec, grid, individual_validation)
        best = max(new, key=lambda p: p.normalized_avg)
        log(f"[grid] {grid.name} {spec.label()}: merge {new[0].merge_seconds:.0f} s, best λ "
            f"{best.spec.parameters['lambda']} -> validation normalized {best.normalized_avg:.4f}")
        points.extend(new)
    return points


def climb(score: Callable[[float], float], lambdas: Sequence[float], start: float) -> List[float]:
    """The λ a hill climb on the sorted grid scores, in grid order: ``start`` and its neighbours; then,
    while the best of them is an end of the scored run, the next λ beyond it, until the score stops
    rising or the grid ends.  On a unimodal curve it finds the grid's best point; ties keep the lower λ."""
    grid = sorted(lambdas)
    index = grid.index(start)
    values = {i: score(grid[i]) for i in range(max(index - 1, 0), min(index + 2, len(grid)))}
    while True:
        best = max(sorted(values), key=lambda i: values[i])  # the first (lowest λ) of equal scores
        step = -1 if best == min(values) and best > 0 else 1 if best == max(values) and best < len(grid) - 1 else 0
        if step == 0 or (best + step) in values:
            return [grid[i] for i in sorted(values)]
        values[best + step] = score(grid[best + step])


def climbed_points(bench: Experiment, spec: MergeSpec, grid: MethodGrid,
                   individual_validation: Mapping[str, float]) -> List[GridPoint]:
    """The grid points ``climb`` scores for one configuration (each λ scored once, cached by the bench)."""
    def point(lam: float) -> GridPoint:
        return grid_points(bench.sweep(spec, [lam], bench.tasks, "validation"), individual_validation, bench.tasks)[0]

    return [point(lam) for lam in climb(lambda lam: point(lam).normalized_avg, grid.lambdas, grid.climb_from)]


def best_point(points: Sequence[GridPoint]) -> GridPoint:
    """Highest validation normalized accuracy; ties go to the earlier grid point."""
    best = points[0]
    for point in points[1:]:
        if point.normalized_avg > best.normalized_avg:
            best = point
    return best
