"""The hard track's scorer: the quick track's (``benchmarks.llm.experiment``) on the eight tasks, keeping
every test example's correctness (0/1) so that intervals can be drawn (``benchmarks.harness.bootstrap``).

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
from typing import Any, Dict, List, Mapping, Sequence

import torch

from benchmarks.harness.experiment import FinalMerge, Scores
from benchmarks.harness.lambda_path import State, load_state
from benchmarks.llm.experiment import GREEDY_BATCH_SIZE, LLMBenchmark
from benchmarks.llm.tasks import Example, is_generative
from benchmarks.llm_hard.tasks import MAX_NEW_TOKENS, hard_task_splits
from mergekit_awd.tools import lm_scoring

Correct = Dict[str, List[int]]


def correct_examples(model, tokenizer, task: str, examples: Sequence[Example]) -> List[int]:
    """1 where the model answers an example right, else 0 (the split's order)."""
    if is_generative(examples):
        outputs = lm_scoring.greedy_continuations(model, tokenizer, [e.prompt for e in examples],
                                                  max_new_tokens=MAX_NEW_TOKENS[task], batch_size=GREEDY_BATCH_SIZE)
        return [int(o.strip() == e.answer.strip()) for o, e in zip(outputs, examples)]
    predictions = lm_scoring.rank_classification(model, tokenizer, examples)
    return [int(p == e.label) for p, e in zip(predictions, examples)]


class HardLLMBenchmark(LLMBenchmark):
    """``LLMBenchmark`` on the hard track's tasks, with per-example test results, computing in bfloat16."""

    score_dtype = torch.bfloat16

    def __init__(self, tasks: Sequence[str], task_folders: Mapping[str, Path], base_dir: Path, merges_dir: Path
                 ) -> None:
        super().__init__(tasks, task_folders, base_dir, (), merges_dir, splits_of=hard_task_splits)
        self._pending: Dict[int, Correct] = {}

    def correct_state(self, state: State, split: str, tasks: Sequence[str]) -> Correct:
        with self.timed("scoring"):
            self._load(state)
            with torch.inference_mode():
                return {t: correct_examples(self.model, self.tokenizer, t, self.examples[split][t]) for t in tasks}

    def score_state(self, state: State, split: str, tasks: Sequence[str]) -> Scores:
        """Accuracies; on test the per-example results wait for ``final_extra_scores`` of the same state."""
        correct = self.correct_state(state, split, tasks)
        if split == "test":
            self._pending[id(state)] = correct
        return {t: sum(values) / len(values) for t, values in correct.items()}

    def final_extra_scores(self, state: State) -> Dict[str, Any]:
        return {"correct": self._pending.pop(id(state), {})}

    def entry_extras(self, final: FinalMerge) -> Dict[str, Any]:
        return {"merge_dtype": self.final_dtype}

    def log_details(self, entry: Mapping[str, Any]) -> str:
        return ""

    def reference_correct(self, which: str) -> Correct:
        """Per-example test results of each fine-tune on its own task (``individual``) or of the base
        (``pretrained``), cached."""
        def compute() -> Dict[str, Any]:
            if which == "pretrained":
                return self.correct_state(self._base_state, "test", self.tasks)
            return {t: self.correct_state(load_state(self.task_folders[t]), "test", [t])[t] for t in self.tasks}

        return self._cached(f"{which}/test/correct", compute)

    def individual_scores(self, split: str) -> Scores:
        if split != "test":
            return super().individual_scores(split)
        return {t: sum(v) / len(v) for t, v in self.reference_correct("individual").items()}

    def pretrained_scores(self, split: str) -> Scores:
        if split != "test":
            return super().pretrained_scores(split)
        return {t: sum(v) / len(v) for t, v in self.reference_correct("pretrained").items()}


__all__ = ["HardLLMBenchmark", "correct_examples", "Correct"]
