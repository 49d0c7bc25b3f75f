"""The hard track's learned-coefficient rows (issue #29), beside the data-free ones:

* ``adamerging``: task arithmetic's τ_i with one λ per task and block learned by entropy minimisation
  (AdaMerging) on the validation lines (labels unused);
* ``awd_adamerging``: the same on AWD's disentangled τ̂_i = τ_i − δ (``awd`` at the track's AWD settings,
  row scope: AWD AdaMerging, the AWD paper's best row);
* ``layerwise_likelihood``: τ̂_i again, λ learned on the labelled validation lines (≤ 128 per task);
* ``layerwise_tsv``: TSV-M's per-task low-rank parts, λ learned on the labelled lines from Λ⁰ = 1 (the
  ``tsv`` merge at λ 1): whether the labelled objective adds to a strong data-free merge;
* ``tune_methods``: the method chooser — the row with the best validation score among the data-free rows
  (each with its λ chosen on validation), scored on test: what ``mergekit-awd tune --methods`` picks.

The layer-wise rows use the library of ``mergekit-awd tune --layerwise`` (``tools.layerwise``): Adam from
Λ⁰ (0.3; tsv 1: ``LAYERWISE_FORMS``) on a float32 model, every 4th validation line of each task held out
for early stopping (as ``tune --layerwise``); the learned θ(Λ) is scored on test rounded to bfloat16
(what ``mergekit-awd merge`` of the written configuration gives in bfloat16, to rounding:
``tests/test_layerwise.py``), with every example's correctness kept for the intervals.  Seconds
and peak memory are recorded.
"""

from __future__ import annotations

import json
import time
from typing import Any, Dict, Mapping, Sequence, Tuple

import torch

ROWS: Dict[str, Tuple[str, Dict[str, Any], str]] = {   # row -> (method, parameters, objective)
    "adamerging": ("task_arithmetic", {}, "entropy"),
    "awd_adamerging": ("awd", {"scope": "row", "alpha": 0.01}, "entropy"),
    "layerwise_likelihood": ("awd", {"scope": "row", "alpha": 0.01}, "likelihood"),
    "layerwise_tsv": ("tsv", {}, "likelihood"),  # TSV-M's per-task parts, from Λ⁰ = 1 (tsv at λ 1)
}
STEPS = 100
LR = 1e-3
BATCH_SIZE = 16


def merge_configuration(method: str, parameters: Mapping[str, Any], base_dir: Any, folders: Sequence[Any]) -> Any:
    """The mergekit configuration merging ``folders`` (weight 1 each) onto ``base_dir`` with ``method``."""
    from mergekit_awd.pipeline.config import load_config

    config = {"merge_method": method, "base_model": str(base_dir), "dtype": "float32",
              "models": [{"model": str(folder), "parameters": {"weight": 1.0}} for folder in folders],
              "parameters": dict(parameters)}
    return load_config(config)[0]


def float32_model(base_dir: Any) -> torch.nn.Module:
    """The base architecture in float32 for the gradient (the bench scores in bfloat16)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32).eval()


def learned_row(bench: Any, folders: Mapping[str, Any], base_dir: Any, row: str) -> Dict[str, Any]:
    """One layer-wise row: learned Λ, test scores and per-example results (cached in the bench's records)."""
    from mergekit_awd.tools.layerwise import held_out_split, learn_coefficients, per_task_parts
    from mergekit_awd.tools.tune_layerwise import peak_memory_gib

    method, parameters, objective = ROWS[row]

    def compute() -> Dict[str, Any]:
        started = time.perf_counter()
        problem = per_task_parts(merge_configuration(method, parameters, base_dir, [folders[t] for t in bench.tasks]),
                                 row)
        train, held = held_out_split([bench.examples["validation"][t] for t in bench.tasks], 4)  # as tune does
        result = learn_coefficients(problem, float32_model(base_dir), bench.tokenizer, train, held, objective, STEPS,
                                    LR, BATCH_SIZE)
        learned = {k: v.to(torch.bfloat16) for k, v in problem.state(result.coefficients).items()}
        correct = bench.correct_state(learned, "test", bench.tasks)
        return {"coefficients": result.coefficients.tolist(), "groups": result.groups, "best_step": result.best_step,
                "held_out_value": result.held_out_value, "initial_held_out_value": result.initial_held_out_value,
                "tasks": {t: sum(v) / len(v) for t, v in correct.items()}, "correct": correct,
                "seconds": time.perf_counter() - started, "learning_seconds": result.seconds,
                "peak_memory_gib": peak_memory_gib(), "train_lines": len(train), "held_out_lines": len(held)}

    return bench._cached(record_key(row), compute)


def record_key(row: str) -> str:
    """The records' key of a learned row: its name and everything that defines it (method, parameters,
    objective, steps, lr, batch), so that a changed definition is learned again, never read from the cache."""
    method, parameters, objective = ROWS[row]
    return f"layerwise/{row}/{method}/{json.dumps(parameters, sort_keys=True)}/{objective}/{STEPS}/{LR}/{BATCH_SIZE}"


def learned_rows(bench: Any, folders: Mapping[str, Any], base_dir: Any, individual_test: Mapping[str, float]
                 ) -> Dict[str, Tuple[Dict[str, Any], Dict[str, Any]]]:
    """row -> (results entry, per-example results) of the layer-wise rows."""
    from benchmarks.harness.scoring import summarise

    out = {}
    for row, (method, parameters, objective) in ROWS.items():
        record = learned_row(bench, folders, base_dir, row)
        entry = {"tasks": record["tasks"], **summarise(record["tasks"], individual_test, bench.tasks),
                 "params": {"merge_method": method, **parameters, "layerwise": objective, "steps": STEPS, "lr": LR},
                 "merge_seconds": record["seconds"], "layerwise": {k: v for k, v in record.items() if k != "correct"}}
        out[row] = (entry, record["correct"])
    return out


def chooser_row(runs: Mapping[str, Any]) -> Tuple[str, Dict[str, Any]]:
    """(the chosen row, its entry as ``tune_methods``): the best validation score among the data-free rows."""
    from benchmarks.llm_hard.targets import best_by_validation

    chosen = best_by_validation(runs)
    return chosen, {**runs[chosen].entry, "chosen_row": chosen}


__all__ = ["ROWS", "merge_configuration", "learned_row", "learned_rows", "record_key", "chooser_row"]
