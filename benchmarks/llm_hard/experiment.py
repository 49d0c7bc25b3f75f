"""The hard track's scorer: the quick track's (``benchmarks.llm.experiment``) on the eight tasks; like
every track (``benchmarks.harness.experiment``) it keeps every test example's correctness (0/1) so that
intervals can be drawn (``benchmarks.harness.bootstrap``).

Classification tasks: rank classification over the answers; generative tasks: greedy decoding up to the
task's ``MAX_NEW_TOKENS`` and exact match of the stripped text.  Validation points are scored as
accuracies; the test split (the final merges, the fine-tunes, the base) also records
``correct[task]``, a list of 0/1 in the split's example order, in the record cache.  No perplexity
(the quick track reports it).

Models compute in bfloat16 (``score_dtype``): the final merges are bfloat16 files, run as users run
them, and a bfloat16 forward pass is about twice as fast as a float32 one on these CPUs (the track
scores ~6,000 lines per row); grid points θ(λ) are rounded to bfloat16 before scoring, the fine-tunes
and the base too, so every score of the track is measured the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Mapping, Sequence

import torch

from benchmarks.harness.experiment import Correct
from benchmarks.llm.experiment import LLMBenchmark, correct_examples as llm_correct_examples
from benchmarks.llm.tasks import Example
from benchmarks.llm_hard.tasks import MAX_NEW_TOKENS, hard_task_splits
from mergekit_awd.tools import lm_scoring


def correct_examples(model, tokenizer, task: str, examples: Sequence[Example]) -> List[int]:
    """1 where the model answers an example of ``task`` right, else 0 (the split's order); generative
    tasks decoded up to the task's ``MAX_NEW_TOKENS``."""
    return llm_correct_examples(model, tokenizer, examples, MAX_NEW_TOKENS.get(task, lm_scoring.DEFAULT_MAX_NEW_TOKENS))


class HardLLMBenchmark(LLMBenchmark):
    """``LLMBenchmark`` on the hard track's tasks, computing in bfloat16, without perplexity (the harness
    keeps the per-example test results of every track)."""

    score_dtype = torch.bfloat16

    def __init__(self, tasks: Sequence[str], task_folders: Mapping[str, Path], base_dir: Path, merges_dir: Path
                 ) -> None:
        super().__init__(tasks, task_folders, base_dir, (), merges_dir, splits_of=hard_task_splits)

    def max_new_tokens(self, task: str) -> int:
        return MAX_NEW_TOKENS.get(task, lm_scoring.DEFAULT_MAX_NEW_TOKENS)


__all__ = ["HardLLMBenchmark", "correct_examples", "Correct"]
