"""The LLM track's working context: splits, the scorer, CLI merges and their cached scores.

Same protocol as the MiniLM benchmark (``benchmarks.quality.experiment``), with a causal LM:

* a grid point is θ(λ) = θ_base + λ·D scored on the validation split, D from one ``mergekit-awd``
  merge at λ = 1 written in float32 (``benchmarks.quality.lambda_path``: exact for every method here);
* the validation-chosen point is merged again through the CLI **in bfloat16, as users run it**, and
  that model is scored on test and on the general-English perplexity sample; ``lambda_rescale_max_abs_diff``
  records how far it is from θ_base + λ·D (bfloat16 rounding, nothing else);
* scores are cached in ``benchmarks/.cache/llm/merges/records.json`` under keys made of the merge
  configuration, λ, the split and a fingerprint of the model files and of the package's code, so an
  interrupted run resumes.

Every model is scored in float32 with the base's tokenizer and the plain prompt format of
``benchmarks.llm.tasks``.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

import torch

from benchmarks.llm.tasks import Example, is_generative, task_splits
from benchmarks.quality.experiment import FinalMerge, Sweep, fingerprint, merge_code_version
from benchmarks.quality.lambda_path import LambdaPath, State, load_state, max_abs_difference
from benchmarks.quality.merging import MergeSpec, config_key, merge_config, run_cli_merge
from mergekit_awd.tools import lm_scoring

SPLIT_NAMES = ("validation", "test")
FINAL_DTYPE = "bfloat16"
Scores = Dict[str, float]


GREEDY_BATCH_SIZE = 64  # a 64-example split decoded in one batch: each decoding step runs once, not per 16


def score_examples(model, tokenizer, examples: Sequence[Example]) -> float:
    """Accuracy: rank classification for choice examples, greedy exact match for answer examples."""
    if is_generative(examples):
        return lm_scoring.greedy_exact_match(model, tokenizer, examples, batch_size=GREEDY_BATCH_SIZE)
    return lm_scoring.accuracy(lm_scoring.rank_classification(model, tokenizer, examples), examples)


class LLMBenchmark:
    """Base folder, fine-tunes, examples per split, a reusable float32 model and the record cache."""

    def __init__(self, tasks: Sequence[str], task_folders: Mapping[str, Path], base_dir: Path,
                 perplexity_texts: Sequence[str], merges_dir: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tasks = list(tasks)
        self.task_folders = dict(task_folders)
        self.base_dir = base_dir
        self.merges_dir = merges_dir
        self.tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
        self.examples: Dict[str, Dict[str, Sequence[Example]]] = {name: {} for name in SPLIT_NAMES}
        for task in self.tasks:
            splits = task_splits(task, self.tokenizer)
            self.examples["validation"][task] = splits.validation
            self.examples["test"][task] = splits.test
        self.perplexity_texts = list(perplexity_texts)
        self.model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32).eval()
        self.fingerprint = fingerprint([base_dir / "model.safetensors"] + [
            self.task_folders[t] / "model.safetensors" for t in self.tasks
        ]) + f"-{merge_code_version()}"
        self.records_path = merges_dir / "records.json"
        self.records: Dict[str, Dict[str, Any]] = (
            json.loads(self.records_path.read_text()) if self.records_path.exists() else {}
        )
        self._base_state = load_state(base_dir)
        # wall seconds this run spent in CLI merges and in scoring (the run's cost breakdown)
        self.seconds: Dict[str, float] = {"merging": 0.0, "scoring": 0.0}

    # -- scoring ----------------------------------------------------------------------------------
    def _load(self, state: State) -> None:
        """Put ``state`` (any dtype) into the float32 model; a tied lm_head follows the embeddings."""
        missing, unexpected = self.model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
        if unexpected or [m for m in missing if m != "lm_head.weight"]:
            raise KeyError(f"state does not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
        self.model.tie_weights()

    def score_state(self, state: State, split: str, tasks: Sequence[str]) -> Scores:
        started = time.perf_counter()
        self._load(state)
        with torch.inference_mode():
            scores = {t: score_examples(self.model, self.tokenizer, self.examples[split][t]) for t in tasks}
        self.seconds["scoring"] += time.perf_counter() - started
        return scores

    def perplexity_of_state(self, state: State) -> float:
        started = time.perf_counter()
        self._load(state)
        with torch.inference_mode():
            value = lm_scoring.perplexity(self.model, self.tokenizer, self.perplexity_texts, max_length=128)
        self.seconds["scoring"] += time.perf_counter() - started
        return value

    def _merge(self, config: Dict[str, Any], work_dir: Path):
        run = run_cli_merge(config, work_dir)
        self.seconds["merging"] += run.seconds
        return run

    def _cached(self, key: str, compute: Callable[[], Dict[str, Any]]) -> Dict[str, Any]:
        full_key = f"{key}/{self.fingerprint}"
        if full_key not in self.records:
            self.records[full_key] = compute()
            self._save()
        return self.records[full_key]

    def individual_scores(self, split: str) -> Scores:
        """Each fine-tune on its own task."""
        return self._cached(f"individual/{split}", lambda: {
            t: self.score_state(load_state(self.task_folders[t]), split, [t])[t] for t in self.tasks
        })

    def individual_perplexity(self) -> Dict[str, float]:
        return self._cached("individual/perplexity", lambda: {
            t: self.perplexity_of_state(load_state(self.task_folders[t])) for t in self.tasks
        })

    def pretrained_scores(self, split: str) -> Scores:
        return self._cached(f"pretrained/{split}", lambda: self.score_state(self._base_state, split, self.tasks))

    def pretrained_perplexity(self) -> float:
        return self._cached("pretrained/perplexity", lambda: {"value": self.perplexity_of_state(self._base_state)})["value"]

    # -- merges -----------------------------------------------------------------------------------
    def _config(self, spec: MergeSpec, tasks: Sequence[str], dtype: str = "float32") -> Dict[str, Any]:
        return merge_config(spec, self.base_dir, [self.task_folders[t] for t in tasks], dtype=dtype)

    def _merge_at_one(self, spec: MergeSpec, tasks: Sequence[str]) -> Path:
        config = self._config(spec.with_lambda(1.0), tasks)
        key = config_key(config)
        work_dir = self.merges_dir / key
        record_key = f"merge/{key}/{self.fingerprint}"
        if record_key not in self.records or not (work_dir / "model" / "model.safetensors").exists():
            run = self._merge(config, work_dir)
            self.records.setdefault(record_key, {"seconds": run.seconds, "report": run.report})
            self._save()
        return work_dir / "model"

    def sweep(self, spec: MergeSpec, lambdas: Sequence[float], tasks: Sequence[str], split: str = "validation",
              ) -> Sweep:
        """Scores of ``spec`` at every λ on ``split``, from one float32 CLI merge at λ = 1."""
        base_key = config_key(self._config(spec.with_lambda(1.0), tasks))
        todo = [lam for lam in lambdas if f"sweep/{base_key}/{lam}/{split}/{self.fingerprint}" not in self.records]
        if todo:
            path = LambdaPath(self._base_state, load_state(self._merge_at_one(spec, tasks)))
            for lam in todo:
                self._cached(f"sweep/{base_key}/{lam}/{split}",
                             lambda: self.score_state(path.at(lam), split, tasks))
        merge_record = self.records[f"merge/{base_key}/{self.fingerprint}"]
        scores = {lam: self.records[f"sweep/{base_key}/{lam}/{split}/{self.fingerprint}"] for lam in lambdas}
        return Sweep(spec=spec, merge_seconds=merge_record["seconds"], scores=scores, report=merge_record["report"])

    def final(self, spec: MergeSpec, tasks: Sequence[str], splits: Sequence[str] = ("test",),
              check_lambda_path: bool = True) -> FinalMerge:
        """bfloat16 CLI merge at ``spec``'s settings, scored on ``splits`` and on perplexity
        (``scores["perplexity"] = {"value": ...}``)."""
        config = self._config(spec, tasks, dtype=FINAL_DTYPE)
        key = config_key(config)
        work_dir = self.merges_dir / f"final-{key}"

        def compute() -> Dict[str, Any]:
            run = self._merge(config, work_dir)
            state = load_state(run.out_dir)
            scores: Dict[str, Any] = {split: self.score_state(state, split, tasks) for split in splits}
            scores["perplexity"] = {"value": self.perplexity_of_state(state)}
            check = None
            if check_lambda_path:
                lam = float(spec.parameters["lambda"])
                path = LambdaPath(self._base_state, load_state(self._merge_at_one(spec, tasks)))
                check = max_abs_difference(state, path.at(lam))
            shutil.rmtree(run.out_dir, ignore_errors=True)
            return {"seconds": run.seconds, "scores": scores, "report": run.report, "check": check}

        record = self._cached(f"final/{key}/{'+'.join(splits)}/{check_lambda_path}", compute)
        return FinalMerge(spec=spec, seconds=record["seconds"], scores=record["scores"], report=record["report"],
                          lambda_rescale_max_abs_diff=record["check"])

    def cleanup(self) -> None:
        for model_dir in self.merges_dir.glob("*/model"):
            shutil.rmtree(model_dir, ignore_errors=True)

    def _save(self) -> None:
        self.records_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.records_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.records))
        tmp.replace(self.records_path)


def task_vector_cosines(base_dir: Path, folders: Mapping[str, Path], tasks: Sequence[str]) -> Dict[str, Any]:
    """Pairwise cosine of the whole-model task vectors (2-D block weights), K×K, for the report."""
    from mergekit_awd.core.task_vectors import pairwise_abs_cos  # noqa: F401  (same definition as the reports)

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
