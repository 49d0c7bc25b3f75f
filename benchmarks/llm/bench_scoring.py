"""``python -m benchmarks.llm.bench_scoring``: what the evaluator's shared-prefix batching saves.

``mergekit_awd.tools.lm_scoring`` sorts a call's prompts by length before batching and runs the token
prefix they all share (the task's instruction) once per batch, its key/value cache repeated over the
batch (``share_prefix=True``, the default).  This scores the LLM track's validation split of every
task with both settings, one after the other in one run, on the base and on each fine-tune (its own
task: a fine-tune stops generating at EOS, as merges do), and prints per task

* the prompt tokens each setting runs through the model (padding included),
* the seconds of each and their ratio,
* that the accuracies are equal and the largest difference of a choice score (nats; float rounding).

Needs the base and the fine-tunes of ``./run.sh llm-quality`` (~/.cache/mergekit-awd/benchmarks/llm; built when
missing).  Writes benchmarks/results/llm_scoring_speed.{json,md}.
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Sequence

from benchmarks.harness.runner import offline_environment

offline_environment()

import torch  # noqa: E402

from benchmarks.common import save_results  # noqa: E402
from mergekit_awd.tools import lm_scoring  # noqa: E402


def prompt_tokens(prompts: Sequence[List[int]], batch_size: int, share_prefix: bool) -> int:
    """Tokens the model runs for the prompts: padded batches, plus the prefix once per batch."""
    prefix = lm_scoring.shared_prefix_length(prompts) if share_prefix else 0
    return sum(len(batch) * (max(len(prompts[i]) for i in batch) - prefix) + prefix
               for batch in lm_scoring._length_sorted_batches(prompts, batch_size, sort=share_prefix))


def score_once(model, tokenizer, examples, share_prefix: bool) -> Dict[str, Any]:
    started = time.perf_counter()
    with torch.inference_mode():
        if isinstance(examples[0], lm_scoring.AnswerExample):
            accuracy = lm_scoring.greedy_exact_match(model, tokenizer, examples, share_prefix=share_prefix)
            scores: List[List[float]] = []
        else:
            scores = lm_scoring.choice_scores(model, tokenizer, examples, share_prefix=share_prefix)
            accuracy = lm_scoring.accuracy(lm_scoring.predictions_from_scores(scores), examples)
    return {"seconds": time.perf_counter() - started, "accuracy": accuracy, "scores": scores}


def main() -> Dict[str, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    from benchmarks.llm.base_model import ensure_base_model
    from benchmarks.llm.models import ensure_finetunes
    from benchmarks.llm.tasks import TASK_NAMES, task_splits

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    base_dir = ensure_base_model()
    folders = ensure_finetunes(TASK_NAMES)
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    batch_size = lm_scoring.DEFAULT_BATCH_SIZE
    rows = []
    for model_name, folder, tasks in [("base", base_dir, TASK_NAMES)] + [
            (f"fine-tune {t}", folders[t], (t,)) for t in TASK_NAMES]:
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
        for task in tasks:
            examples = task_splits(task, tokenizer).validation
            encoded = [lm_scoring.encode_prompt(tokenizer, e.prompt) for e in examples]
            plain = score_once(model, tokenizer, examples, share_prefix=False)
            shared = score_once(model, tokenizer, examples, share_prefix=True)
            difference = max((abs(a - b) for ra, rb in zip(plain["scores"], shared["scores"]) for a, b in zip(ra, rb)),
                             default=0.0)
            row = {
                "model": model_name, "task": task, "examples": len(examples),
                "shared_prefix_tokens": lm_scoring.shared_prefix_length(encoded),
                "tokens_plain": prompt_tokens(encoded, batch_size, False),
                "tokens_shared": prompt_tokens(encoded, batch_size, True),
                "seconds_plain": round(plain["seconds"], 3), "seconds_shared": round(shared["seconds"], 3),
                "speedup": round(plain["seconds"] / shared["seconds"], 2),
                "accuracy_plain": plain["accuracy"], "accuracy_shared": shared["accuracy"],
                "max_choice_score_difference": difference,
            }
            rows.append(row)
            print(f"{model_name:28s} {task:20s} tokens {row['tokens_plain']:5d} -> {row['tokens_shared']:5d}  "
                  f"{row['seconds_plain']:6.2f} s -> {row['seconds_shared']:6.2f} s ({row['speedup']:.2f}x)  "
                  f"accuracy {plain['accuracy']:.4f} / {shared['accuracy']:.4f}  max diff {difference:.1e}",
                  flush=True)
    total_plain = sum(r["seconds_plain"] for r in rows)
    total_shared = sum(r["seconds_shared"] for r in rows)
    results = {"rows": rows, "batch_size": batch_size, "threads": torch.get_num_threads(),
               "seconds_plain": round(total_plain, 2), "seconds_shared": round(total_shared, 2),
               "speedup": round(total_plain / total_shared, 2),
               "accuracies_equal": all(r["accuracy_plain"] == r["accuracy_shared"] for r in rows)}
    save_results("llm_scoring_speed", results, markdown_lines(results))
    return results


def markdown_lines(results: Dict[str, Any]) -> List[str]:
    return [
        "# LLM evaluator: shared-prefix batching",
        "",
        "`python -m benchmarks.llm.bench_scoring` (validation split of the LLM track, float32, "
        f"{results['threads']} threads, batches of {results['batch_size']}). *plain*: prompts batched in the given "
        "order, each run whole; *shared*: sorted by length, the shared prefix run once per batch and its cache "
        "repeated. Tokens: prompt tokens run through the model, padding included.",
        "",
        "| model | task | shared prefix | tokens plain | tokens shared | s plain | s shared | speed-up "
        "| accuracy plain | accuracy shared | max score diff (nats) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ] + [
        f"| {r['model']} | {r['task']} | {r['shared_prefix_tokens']} | {r['tokens_plain']} | "
        f"{r['tokens_shared']} | {r['seconds_plain']:.2f} | {r['seconds_shared']:.2f} | "
        f"{r['speedup']:.2f}× | {r['accuracy_plain']:.4f} | {r['accuracy_shared']:.4f} | "
        f"{r['max_choice_score_difference']:.1e} |" for r in results["rows"]
    ] + ["", f"All rows: {results['seconds_plain']:.1f} s → {results['seconds_shared']:.1f} s "
         f"(**{results['speedup']:.2f}×**); accuracies equal: {results['accuracies_equal']}.", ""]


if __name__ == "__main__":
    main()
