"""``python -m benchmarks.llm_hard.bench_score_dtype``: the hard track's scorer in float32 and in bfloat16.

Why the hard track computes in bfloat16 (``benchmarks.llm_hard.experiment``): the same validation lines
(64 per task, each task's first) scored by the base and by each cached fine-tune on its own task, in both
dtypes, one after the other in one process: seconds per line, the speed-up and the accuracies (bfloat16
rounding may flip a line whose two best answers are within its resolution).  Needs the base (built if
missing); fine-tunes not built yet are left out.  Run it alone: a second torch job on two cores slows
both by an order of magnitude.  Writes benchmarks/results/score_dtype.{json,md}.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List

from benchmarks.harness.runner import offline_environment

offline_environment()

import torch  # noqa: E402

from benchmarks.common import save_results  # noqa: E402

LINES = 64
DTYPES = (torch.float32, torch.bfloat16)


def _score(model: Any, tokenizer: Any, task: str, examples: List[Any]) -> Dict[str, float]:
    from benchmarks.llm_hard.experiment import correct_examples

    started = time.perf_counter()
    with torch.inference_mode():
        correct = correct_examples(model, tokenizer, task, examples)
    seconds = time.perf_counter() - started
    return {"ms_per_line": 1000 * seconds / len(examples), "accuracy": sum(correct) / len(correct)}


def measure() -> Dict[str, Any]:
    """Per (model, task) and dtype: milliseconds per line and accuracy."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from benchmarks.llm.base_model import ensure_base_model
    from benchmarks.llm.finetune import DONE_MARKER
    from benchmarks.llm_hard.models import HARD_FINETUNE_DIR
    from benchmarks.llm_hard.tasks import HARD_TASK_NAMES, hard_task_splits

    base = ensure_base_model()
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    examples = {t: list(hard_task_splits(t, tokenizer).validation[:LINES]) for t in HARD_TASK_NAMES}
    models = [("base", base, list(HARD_TASK_NAMES))]
    models += [(f"fine-tune {t}", HARD_FINETUNE_DIR / t, [t]) for t in HARD_TASK_NAMES
               if (HARD_FINETUNE_DIR / t / DONE_MARKER).exists()]
    rows = []
    for label, folder, tasks in models:
        for dtype in DTYPES:
            model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype).eval()
            for task in tasks:
                rows.append({"model": label, "task": task, "dtype": str(dtype).replace("torch.", ""),
                             **_score(model, tokenizer, task, examples[task])})
    return {"lines_per_task": LINES, "threads": torch.get_num_threads(), "rows": rows}


def markdown(results: Dict[str, Any]) -> List[str]:
    by_key: Dict[tuple, Dict[str, Dict[str, float]]] = {}
    for row in results["rows"]:
        by_key.setdefault((row["model"], row["task"]), {})[row["dtype"]] = row
    lines = ["# Hard track scorer: float32 vs bfloat16", "",
             f"`python -m benchmarks.llm_hard.bench_score_dtype` ({results['lines_per_task']} validation lines per "
             f"task, {results['threads']} threads, one process, nothing else running).", "",
             "| model | task | ms/line float32 | ms/line bfloat16 | speed-up | accuracy float32 | accuracy bfloat16 |",
             "|---|---|---:|---:|---:|---:|---:|"]
    total = {"float32": 0.0, "bfloat16": 0.0}
    for (model, task), pair in by_key.items():
        f32, b16 = pair["float32"], pair["bfloat16"]
        total["float32"] += f32["ms_per_line"]
        total["bfloat16"] += b16["ms_per_line"]
        lines.append(f"| {model} | {task} | {f32['ms_per_line']:.1f} | {b16['ms_per_line']:.1f} | "
                     f"{f32['ms_per_line'] / b16['ms_per_line']:.2f}× | {f32['accuracy']:.3f} | {b16['accuracy']:.3f} |")
    lines += ["", f"All rows: **{total['float32'] / total['bfloat16']:.2f}×** faster in bfloat16.", ""]
    return lines


def main() -> None:
    started = time.perf_counter()
    results = measure()
    results["settings"] = {"seconds": round(time.perf_counter() - started)}
    save_results("score_dtype", results, markdown(results))


if __name__ == "__main__":
    main()
