"""``mergekit-awd tune --layerwise``: after the scalar λ grid, one coefficient per task and per group of
tensors learned on the same data (``tools.layerwise``), written as a plain mergekit configuration.

The data's lines are split per task, deterministically, into training lines and held-out lines (every
``held_out_every``-th line of a task is held out); Adam minimises the objective on the training lines and
the held-out lines choose the step (early stopping).  The configuration tuned is the scalar grid's chosen
point without its λ (its other parameters, e.g. α, kept); the learned model is then scored like every grid
point (``validation_score``, on all the lines, beside ``scalar_validation_score``: the grid's best).
``CONFIG.tuned.yml`` holds the learned coefficients as per-model ``weight`` filters
(``mergekit_adapter.layerwise_config``): ``mergekit-awd merge`` of it gives the learned weights.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Tuple

from mergekit_awd.constants import TUNE_LAYERWISE_CHECKPOINT
from mergekit_awd.core.layerwise import Grouping
from mergekit_awd.mergekit_adapter.layerwise_config import layerwise_configuration
from mergekit_awd.tools.layerwise import held_out_split
from mergekit_awd.tools.layerwise_objective import Example, Objective

@dataclass(frozen=True)
class LayerwiseOptions:
    """Settings of the layer-wise tuning (documented defaults: AdaMerging's Adam at lr 1e-3 on Λ from
    0.3 (tsv: 1); 100 steps of 16 lines; a quarter of each task's lines held out; the held-out value every 10 steps)."""

    objective: Objective = "likelihood"
    grouping: Grouping = "layer"
    steps: int = 100
    lr: float = 1e-3
    batch_size: int = 16
    held_out_every: int = 4
    eval_every: int = 10
    seed: int = 0


@dataclass(frozen=True)
class LayerwiseRequest:
    """What ``tune_merge`` needs for ``--layerwise``: the options, the data's tasks (``tune_data``) and
    how to load the base's tokenizer."""

    options: LayerwiseOptions
    tasks: Any
    tokenizer_loader: Callable[[str], Any]


def split_lines(tasks: Any, every: int, objective: Objective = "likelihood") -> Tuple[List[Example], List[Example]]:
    """(training lines, held-out lines): every ``every``-th line of each task is held out (a task with a
    single line trains only); the labelled lines, and for ``entropy`` the unlabelled ones too."""
    return held_out_split([list(task.examples) + (list(task.unlabelled) if objective == "entropy" else [])
                           for task in tasks], every)


def peak_memory_gib() -> float:
    """Peak resident memory of this process so far (GiB; Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 30) if sys.platform == "darwin" else peak / (1 << 20)


def tune_layerwise(config: Mapping[str, Any], label: str, model: Any, tokenizer: Any, tasks: Any,
                   score: Callable[[Any], Tuple[Dict[str, Dict[str, float]], float]], scalar_score: float,
                   options: LayerwiseOptions, out_dir: str, key: str, quiet: bool = False,
                   ) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(the tuned configuration, the report's ``layerwise`` entry) for ``config`` (the scalar choice
    without λ); ``score(model)``: per-task scores and the overall score of the model as it is; ``key``:
    the content of every input, the configuration, the options and the code (a checkpoint of another
    key is not resumed); ``quiet``: no progress bar."""
    import torch

    from mergekit_awd.pipeline.config import load_config
    from mergekit_awd.tools.layerwise import learn_coefficients, per_task_parts

    started = time.perf_counter()
    merge_config, _, _ = load_config(dict(config))
    problem = per_task_parts(merge_config, label, options.grouping)
    train, held_out = split_lines(tasks, options.held_out_every, options.objective)
    device = next(model.parameters()).device
    problem.base = {k: v.to(device) for k, v in problem.base.items()}
    problem.parts = {k: v.to(device) for k, v in problem.parts.items()}
    result = learn_coefficients(problem, model, tokenizer, train, held_out, options.objective, options.steps,
                                options.lr, options.batch_size, options.eval_every, options.seed,
                                checkpoint=Path(os.path.join(out_dir, TUNE_LAYERWISE_CHECKPOINT)), checkpoint_key=key,
                                progress=not quiet)
    with torch.no_grad():
        model.load_state_dict({k: v.to(model.dtype) for k, v in problem.state(result.coefficients).items()},
                              strict=False)
    scores, overall = score(model)
    tuned = layerwise_configuration(config, result.coefficients, result.groups, sorted(problem.parts),
                                    options.grouping)
    entry = {
        "objective": options.objective, "groups": result.groups, "steps": result.steps,
        "best_step": result.best_step, "coefficients": result.coefficients.tolist(), "models": problem.models,
        "initial": problem.initial,
        "validation_score": overall, "validation_tasks": scores, "held_out_score": result.held_out_value,
        "initial_held_out_score": result.initial_held_out_value, "train_objective": result.train_value,
        "scalar_validation_score": scalar_score, "train_lines": len(train), "held_out_lines": len(held_out),
        "history": [list(h) for h in result.history], "options": asdict(options),
        "seconds": time.perf_counter() - started, "peak_memory_gib": peak_memory_gib(),
    }
    return tuned, entry


__all__ = ["LayerwiseOptions", "LayerwiseRequest", "split_lines", "tune_layerwise", "peak_memory_gib"]
