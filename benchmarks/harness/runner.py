"""The steps of a track's run that do not depend on the track: the process set-up, the references'
scores, one row per method (λ and configuration chosen on validation, the chosen point merged again
and scored on test), the run's settings and writing its results.

Import this module before transformers (``offline_environment`` must run first): it imports torch
and transformers inside its functions only.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple

from benchmarks.harness.experiment import Experiment, FinalMerge, Scores, merge_code_version
from benchmarks.harness.grids import MethodGrid
from benchmarks.harness.merging import cli_command
from benchmarks.harness.results import grid_entry, method_entry
from benchmarks.harness.selection import GridPoint, best_point, run_grid

OFFLINE_ENVIRONMENT = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
Log = Callable[[str], None]


def offline_environment() -> None:
    """Local models only, no tokenizer threads (unless the caller's environment says otherwise)."""
    for name, value in OFFLINE_ENVIRONMENT.items():
        os.environ.setdefault(name, value)


def log(message: str) -> None:
    print(message, flush=True)


def prepare_run(errors_only: bool = False) -> float:
    """Every core for torch, transformers' progress bars off (``errors_only``: its warnings too);
    returns the run's start time (``time.perf_counter``)."""
    started = time.perf_counter()
    import torch
    import transformers

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    transformers.utils.logging.disable_progress_bar()
    if errors_only:
        transformers.utils.logging.set_verbosity_error()
    return started


def registered_methods_logged(write: Log = log) -> List[str]:
    from benchmarks.harness.merging import registered_methods

    registered = registered_methods()
    write(f"[setup] merge methods registered: {', '.join(registered)}")
    return registered


def reference_scores(bench: Experiment, write: Log = log) -> Tuple[Dict[str, Scores], Dict[str, Scores]]:
    """(individual, pretrained): each fine-tune on its own task and the base, on validation and test."""
    individual = {split: bench.individual_scores(split) for split in ("validation", "test")}
    pretrained = {split: bench.pretrained_scores(split) for split in ("validation", "test")}
    write(f"[eval] individual test {individual['test']}")
    write(f"[eval] pretrained test {pretrained['test']}")
    return individual, pretrained


@dataclass(frozen=True)
class MethodRun:
    """One method row: its grid's points, the validation-chosen point, its final merge, its entry."""

    grid: MethodGrid
    points: List[GridPoint]
    chosen: GridPoint
    final: FinalMerge
    entry: Dict[str, Any]


def run_method(bench: Experiment, grid: MethodGrid, individual: Mapping[str, Scores], write: Log = log,
               brief: bool = False) -> MethodRun:
    """Validation scores of the grid, the best point merged again (θ(λ) checked) and scored on test."""
    points = run_grid(bench, grid, individual["validation"], write)
    chosen = best_point(points)
    final = bench.final(chosen.spec, bench.tasks, ("test",), check_lambda_path=True)
    entry = {**method_entry(final, chosen, individual["test"], bench.tasks), **bench.entry_extras(final)}
    text = f"[test] {grid.name} {chosen.spec.label()}: test normalized {entry['normalized_avg']:.4f}"
    if not brief:
        text += (f", avg {entry['avg']:.4f}{bench.log_details(entry)}, merge {final.seconds:.0f} s "
                 f"(θ(λ) check {final.lambda_rescale_max_abs_diff:.2e})")
    write(text)
    return MethodRun(grid, points, chosen, final, entry)


def run_methods(bench: Experiment, grids: Sequence[MethodGrid], individual: Mapping[str, Scores],
                write: Log = log, brief: bool = False) -> Dict[str, MethodRun]:
    return {grid.name: run_method(bench, grid, individual, write, brief) for grid in grids}


def method_tables(runs: Mapping[str, MethodRun]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """The results' ``methods`` and ``validation_grid`` mappings."""
    methods = {name: run.entry for name, run in runs.items()}
    grids = {name: {"lambdas": list(run.grid.lambdas), "points": grid_entry(run.points)} for name, run in runs.items()}
    return methods, grids


def run_settings() -> Dict[str, Any]:
    """The settings every track records: threads, the merge command, the code version."""
    import torch

    return {"threads": torch.get_num_threads(), "merge_command": cli_command(), "merge_code": merge_code_version()}


def require_unchanged_code(at_start: str) -> None:
    """Stop before writing a track's results when the package's sources changed during the run (its CLI
    merges would then come from two code states): ``at_start`` is ``merge_code_version()`` at the start."""
    now = merge_code_version()
    if now != at_start:
        raise SystemExit(f"the package's code changed during the run ({at_start} -> {now}): its rows would mix two "
                         "code states; nothing written, run it again")


def write_json(path: Path, results: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
