"""How far the AWD solve is from converged after N steps, on the quality benchmark's real fine-tunes.

    python -m benchmarks.speed.awd_convergence      (needs the cached fine-tunes: ./run.sh quality builds them)

For every tensor AWD disentangles by default (2-D weights inside the encoder layers) of the six
MiniLM fine-tunes, one reduced solve per step count N at the default α, lr and optimizer; prints and
writes benchmarks/results/awd_convergence.{json,md}: per N the objective relative to the 1000-step
value (mean and worst over tensors), the mean |cos| after, and the mean index of the best iterate.
"""

from __future__ import annotations

import argparse
import re
import statistics
from dataclasses import replace

import torch
from safetensors.torch import load_file

from benchmarks.common import save_results
from benchmarks.quality.paths import FINETUNE_DIR, PRETRAINED_ENCODER_DIR
from benchmarks.text_tasks.tasks import TASK_NAMES
from mergekit_awd.core.awd import SolverSettings, solve_reduced
from mergekit_awd.core.task_vectors import gram_of_task_vectors

STEPS = (25, 50, 100, 200, 300, 1000)
REFERENCE = 1000


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    torch.set_num_threads(1)
    base = load_file(str(PRETRAINED_ENCODER_DIR / "model.safetensors"))
    fine_tunes = [load_file(str(FINETUNE_DIR / task / "encoder" / "model.safetensors")) for task in TASK_NAMES]
    names = [n for n in base if re.search(r"layer\.\d+\.", n) and base[n].dim() == 2]
    defaults = SolverSettings()
    rows = {n: [] for n in STEPS}
    for name in names:
        gram = gram_of_task_vectors(base[name], [ft[name] for ft in fine_tunes])
        solved = {n: solve_reduced(gram, replace(defaults, steps=n)) for n in STEPS}
        for n in STEPS:
            rows[n].append((solved[n].loss / solved[REFERENCE].loss, solved[n].mean_abs_cos_after, solved[n].best_step,
                            solved[n].initial_loss / solved[REFERENCE].loss))
    table = {n: {"objective_vs_1000_mean": statistics.mean(r[0] for r in rows[n]),
                 "objective_vs_1000_worst": max(r[0] for r in rows[n]),
                 "mean_abs_cos_after": statistics.mean(r[1] for r in rows[n]),
                 "mean_best_step": statistics.mean(r[2] for r in rows[n])} for n in STEPS}
    start = statistics.mean(r[3] for r in rows[REFERENCE])
    result = {"tasks": list(TASK_NAMES), "tensors": len(names),
              "settings": {"alpha": defaults.alpha, "lr": defaults.lr, "optimizer": defaults.optimizer,
                           "units": defaults.units},
              "objective_at_delta0_vs_1000_mean": start, "steps": table}
    lines = ["# AWD solve: objective after N steps, real fine-tunes", "",
             f"Command: `python -m benchmarks.speed.awd_convergence`. {len(names)} tensors (2-D weights of the encoder "
             f"layers) of the six MiniLM fine-tunes of the quality benchmark, K = {len(TASK_NAMES)}, reduced solver, "
             f"α {defaults.alpha}, lr {defaults.lr}, {defaults.optimizer}, {defaults.units} units. Objective relative "
             f"to the 1000-step solve of the same tensor (at δ = 0 it is {start:.3f} on average).", "",
             "| steps N | objective / 1000-step objective, mean | worst tensor | mean abs cos after | mean best step |",
             "| --- | --- | --- | --- | --- |"]
    for n in STEPS:
        t = table[n]
        lines.append(f"| {n} | {t['objective_vs_1000_mean']:.4f} | {t['objective_vs_1000_worst']:.4f} | "
                     f"{t['mean_abs_cos_after']:.5f} | {t['mean_best_step']:.0f} |")
    save_results("awd_convergence", result, lines + [""])


if __name__ == "__main__":
    main()
