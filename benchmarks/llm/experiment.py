"""The LLM track's working context: examples per split, a reusable float32 model and its scorer.

The protocol is the harness's ``Experiment`` (``benchmarks.harness.experiment``), with a causal LM:

* a grid point is θ(λ) = θ_base + λ·D scored on the validation split, D from one ``mergekit-awd``
  merge at λ = 1 written in float32 (``benchmarks.harness.lambda_path``: exact for every method here);
* the validation-chosen point is merged again through the CLI **in bfloat16, as users run it**, and
  that model is scored on test and on the general-English perplexity sample; ``lambda_rescale_max_abs_diff``
  records how far it is from θ_base + λ·D (bfloat16 rounding, nothing else);
* scores are cached in ``~/.cache/mergekit-awd/benchmarks/llm/merges/records.json``, so an interrupted run resumes.

Every model is scored in ``score_dtype`` (float32 here; the hard track computes in bfloat16) with the
base's tokenizer and the plain prompt format of ``benchmarks.llm.tasks``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Sequence

import torch

from benchmarks.harness.experiment import SPLIT_NAMES, Correct, Experiment, FinalMerge
from benchmarks.harness.lambda_path import State, load_state
from benchmarks.llm.tasks import Example, is_generative, task_splits
from mergekit_awd.tools import lm_scoring

FINAL_DTYPE = "bfloat16"


GREEDY_BATCH_SIZE = 64  # a 64-example split decoded in one batch: each decoding step runs once, not per 16


def correct_examples(model, tokenizer, examples: Sequence[Example],
                     max_new_tokens: int = lm_scoring.DEFAULT_MAX_NEW_TOKENS) -> List[int]:
    """1 where the model answers an example right, else 0 (the split's order): rank classification for
    choice examples, greedy decoding up to ``max_new_tokens`` and exact match of the stripped text for
    answer examples (the means are ``lm_scoring.accuracy`` / ``greedy_exact_match``)."""
    if is_generative(examples):
        outputs = lm_scoring.greedy_continuations(model, tokenizer, [e.prompt for e in examples],
                                                  max_new_tokens=max_new_tokens, batch_size=GREEDY_BATCH_SIZE)
        return [int(o.strip() == e.answer.strip()) for o, e in zip(outputs, examples)]
    predictions = lm_scoring.rank_classification(model, tokenizer, examples)
    return [int(p == e.label) for p, e in zip(predictions, examples)]


class LLMBenchmark(Experiment):
    """Base folder, fine-tunes, examples per split, a reusable float32 model and the record cache."""

    final_dtype = FINAL_DTYPE
    score_dtype = torch.float32  # the dtype the model computes in (another one is part of the records' key)

    def __init__(self, tasks: Sequence[str], task_folders: Mapping[str, Path], base_dir: Path,
                 perplexity_texts: Sequence[str], merges_dir: Path, splits_of: Callable[[str, Any], Any] = task_splits,
                 ) -> None:
        """``splits_of(task, tokenizer)``: a task's examples (the quick track's; the hard track's own)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        suffix = "" if self.score_dtype == torch.float32 else f"-score-{str(self.score_dtype).replace('torch.', '')}"
        super().__init__(tasks, base_dir, task_folders, merges_dir, fingerprint_suffix=suffix)
        self.task_folders = dict(task_folders)
        self.tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
        self.examples: Dict[str, Dict[str, Sequence[Example]]] = {name: {} for name in SPLIT_NAMES}
        for task in self.tasks:
            splits = splits_of(task, self.tokenizer)
            self.examples["validation"][task] = splits.validation
            self.examples["test"][task] = splits.test
        self.perplexity_texts = list(perplexity_texts)
        self.model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=self.score_dtype).eval()

    # -- scoring ----------------------------------------------------------------------------------
    def _load(self, state: State) -> None:
        """Put ``state`` (any dtype) into the model (``score_dtype``); a tied lm_head follows the embeddings."""
        missing, unexpected = self.model.load_state_dict({k: v.to(self.score_dtype) for k, v in state.items()},
                                                         strict=False)
        if unexpected or [m for m in missing if m != "lm_head.weight"]:
            raise KeyError(f"state does not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
        self.model.tie_weights()

    def max_new_tokens(self, task: str) -> int:
        """How far a generative task's answer is decoded."""
        return lm_scoring.DEFAULT_MAX_NEW_TOKENS

    def correct_state(self, state: State, split: str, tasks: Sequence[str]) -> Correct:
        with self.timed("scoring"):
            self._load(state)
            with torch.inference_mode():
                return {t: correct_examples(self.model, self.tokenizer, self.examples[split][t], self.max_new_tokens(t))
                        for t in tasks}

    def perplexity_of_state(self, state: State) -> float:
        with self.timed("scoring"):
            self._load(state)
            with torch.inference_mode():
                return lm_scoring.perplexity(self.model, self.tokenizer, self.perplexity_texts, max_length=128)

    def final_extra_scores(self, state: State) -> Dict[str, Any]:
        """Its per-example test results and, with perplexity texts, its perplexity on the general-English
        sample: ``scores["perplexity"]["value"]``."""
        extra = super().final_extra_scores(state)
        if self.perplexity_texts:
            extra["perplexity"] = {"value": self.perplexity_of_state(state)}
        return extra

    def entry_extras(self, final: FinalMerge) -> Dict[str, Any]:
        extra: Dict[str, Any] = {"merge_dtype": self.final_dtype}
        if "perplexity" in final.scores:
            extra["perplexity"] = final.scores["perplexity"]["value"]
        return extra

    def log_details(self, entry: Mapping[str, Any]) -> str:
        return f", perplexity {entry['perplexity']:.2f}" if "perplexity" in entry else ""

    def individual_perplexity(self) -> Dict[str, float]:
        return self._cached("individual/perplexity", lambda: {
            t: self.perplexity_of_state(load_state(self.task_folders[t])) for t in self.tasks
        })

    def pretrained_perplexity(self) -> float:
        return self._cached("pretrained/perplexity", lambda: {"value": self.perplexity_of_state(self._base_state)})["value"]


def task_vector_cosines(base_dir: Path, folders: Mapping[str, Path], tasks: Sequence[str]) -> Dict[str, Any]:
    """Pairwise cosine of the whole-model task vectors (2-D block weights), K×K, for the report."""
    base = load_state(base_dir)
    keys = [k for k in base if base[k].dim() == 2 and ".layers." in k]
    flat = []
    for t in tasks:
        state = load_state(folders[t])
        flat.append(torch.cat([(state[k].double() - base[k].double()).flatten() for k in keys]))
    stack = torch.stack(flat)
    norms = stack.norm(dim=1).clamp_min(1e-300)
    cos = (stack @ stack.T) / (norms[:, None] * norms[None, :])
    return {"tasks": list(tasks), "cos": cos.tolist(), "norms": norms.tolist()}
