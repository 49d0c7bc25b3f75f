"""The benchmark's working context: tokenised splits, task heads, CLI merges and their scores.

Scores and merge timings are cached in ``benchmarks/.cache/merges/records.json`` under keys made of
the merge configuration, λ, the split and the fine-tunes' fingerprint, so an interrupted run resumes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

import torch
from transformers import AutoTokenizer, BertModel

from benchmarks.quality.data import task_splits
from benchmarks.quality.encoder_io import encoder_with_state, load_encoder, load_head
from benchmarks.quality.evaluate import EncodedSplit, accuracy_per_task, encode_split
from benchmarks.quality.lambda_path import LambdaPath, load_state, max_abs_difference
from benchmarks.quality.merging import MergeSpec, config_key, merge_config, run_cli_merge
from benchmarks.quality.models import encoder_folder, head_folder
from benchmarks.quality.paths import MERGES_DIR
from benchmarks.quality.splits import balanced_subset

SPLIT_NAMES = ("validation", "test")
Scores = Dict[str, float]


def fingerprint(paths: Sequence[Path]) -> str:
    """Identity of the model files a score depends on (path, size and modification time)."""
    parts = [f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in paths]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def merge_code_version() -> str:
    """mergekit's version and a hash of mergekit_awd's Python sources: cached merges and scores are
    only reused while both are unchanged (the package's ``code_version``, also what ``tune`` keys by)."""
    from mergekit_awd.code_version import code_version

    return code_version()


@dataclass
class Sweep:
    """One CLI merge at λ = 1 and the scores of θ(λ) = θ_base + λ·(θ(1) − θ_base) on a split."""

    spec: MergeSpec
    merge_seconds: float
    scores: Dict[float, Scores]
    report: Optional[Dict[str, Any]]


@dataclass
class FinalMerge:
    """A CLI merge at given settings, scored on the requested splits."""

    spec: MergeSpec
    seconds: float
    scores: Dict[str, Scores]
    report: Optional[Dict[str, Any]]
    lambda_rescale_max_abs_diff: Optional[float]


class Benchmark:
    """Fine-tunes, pretrained encoder, tokenised splits and the record cache."""

    def __init__(self, tasks: Sequence[str], task_folders: Mapping[str, Path], pretrained_dir: Path,
                 tokenizer_path: Path, validation_per_task: Optional[int] = None,
                 merges_dir: Path = MERGES_DIR) -> None:
        self.tasks = list(tasks)
        self.task_folders = dict(task_folders)
        self.pretrained_dir = pretrained_dir
        self.merges_dir = merges_dir
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_path))
        self.heads = {t: load_head(head_folder(self.task_folders[t])) for t in self.tasks}
        self.encoded: Dict[str, Dict[str, EncodedSplit]] = {name: {} for name in SPLIT_NAMES}
        self.validation_sizes: Dict[str, int] = {}
        for task in self.tasks:
            names, splits = task_splits(task)
            validation = splits.validation
            if validation_per_task is not None and validation_per_task < len(validation):
                validation = balanced_subset(validation, validation_per_task, len(names))
            self.validation_sizes[task] = len(validation)
            self.encoded["validation"][task] = encode_split(tokenizer, validation)
            self.encoded["test"][task] = encode_split(tokenizer, splits.test)
        self.fingerprint = fingerprint([pretrained_dir / "model.safetensors"] + [
            encoder_folder(self.task_folders[t]) / "model.safetensors" for t in self.tasks
        ]) + f"-v{validation_per_task}-{merge_code_version()}"
        self.records_path = merges_dir / "records.json"
        self.records: Dict[str, Dict[str, Any]] = (
            json.loads(self.records_path.read_text()) if self.records_path.exists() else {}
        )
        self._base_state = load_state(pretrained_dir)

    # -- scoring ----------------------------------------------------------------------------------
    def score(self, encoder: BertModel, split: str, tasks: Sequence[str]) -> Scores:
        with torch.inference_mode():
            return accuracy_per_task(encoder, self.heads, self.encoded[split], tasks)

    def _cached(self, key: str, compute: Callable[[], Dict[str, Any]]) -> Dict[str, Any]:
        full_key = f"{key}/{self.fingerprint}"
        if full_key not in self.records:
            self.records[full_key] = compute()
            self._save()
        return self.records[full_key]

    def individual_scores(self, split: str) -> Scores:
        """Each fine-tune with its own head on its own task."""
        return self._cached(f"individual/{split}", lambda: {
            t: self.score(load_encoder(encoder_folder(self.task_folders[t])), split, [t])[t] for t in self.tasks
        })

    def pretrained_scores(self, split: str) -> Scores:
        """The base encoder with each task's (fine-tuned) head."""
        return self._cached(f"pretrained/{split}", lambda: self.score(load_encoder(self.pretrained_dir), split,
                                                                     self.tasks))

    # -- merges -----------------------------------------------------------------------------------
    def merge_configuration(self, spec: MergeSpec, tasks: Sequence[str]) -> Dict[str, Any]:
        return merge_config(spec, self.pretrained_dir, [encoder_folder(self.task_folders[t]) for t in tasks])

    def _merge_at_one(self, spec: MergeSpec, tasks: Sequence[str]) -> Path:
        """Folder of the CLI merge of ``spec`` with λ = 1 (merged again if its weights were cleaned up;
        the first measured merge time is the one recorded)."""
        config = self.merge_configuration(spec.with_lambda(1.0), tasks)
        key = config_key(config)
        work_dir = self.merges_dir / key
        record_key = f"merge/{key}/{self.fingerprint}"
        if record_key not in self.records or not (work_dir / "model" / "model.safetensors").exists():
            record = self._run_merge(config, work_dir)
            self.records.setdefault(record_key, record)
            self._save()
        return work_dir / "model"

    @staticmethod
    def _run_merge(config: Mapping[str, Any], work_dir: Path) -> Dict[str, Any]:
        run = run_cli_merge(config, work_dir)
        return {"seconds": run.seconds, "report": run.report}

    def sweep(self, spec: MergeSpec, lambdas: Sequence[float], tasks: Sequence[str], split: str = "validation",
              ) -> Sweep:
        """Validation scores of ``spec`` at every λ, from one CLI merge at λ = 1."""
        base_key = config_key(self.merge_configuration(spec.with_lambda(1.0), tasks))
        todo = [lam for lam in lambdas if f"sweep/{base_key}/{lam}/{split}/{self.fingerprint}" not in self.records]
        if todo:
            path = LambdaPath(self._base_state, load_state(self._merge_at_one(spec, tasks)))
            for lam in todo:
                self._cached(f"sweep/{base_key}/{lam}/{split}", lambda: self.score(
                    encoder_with_state(self.pretrained_dir, path.at(lam)), split, tasks))
        merge_record = self.records[f"merge/{base_key}/{self.fingerprint}"]
        scores = {lam: self.records[f"sweep/{base_key}/{lam}/{split}/{self.fingerprint}"] for lam in lambdas}
        return Sweep(spec=spec, merge_seconds=merge_record["seconds"], scores=scores, report=merge_record["report"])

    def final(self, spec: MergeSpec, tasks: Sequence[str], splits: Sequence[str] = ("test",),
              check_lambda_path: bool = False) -> FinalMerge:
        """CLI merge at ``spec``'s own settings, scored on ``splits``; optionally compare with θ_base + λ·D."""
        config = self.merge_configuration(spec, tasks)
        key = config_key(config)
        work_dir = self.merges_dir / f"final-{key}"

        def compute() -> Dict[str, Any]:
            run = run_cli_merge(config, work_dir)
            state = load_state(run.out_dir)
            encoder = encoder_with_state(self.pretrained_dir, state)
            scores = {split: self.score(encoder, split, tasks) for split in splits}
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
        """Delete merged weights (scores, timings and reports stay in the record cache)."""
        for model_dir in self.merges_dir.glob("*/model"):
            shutil.rmtree(model_dir, ignore_errors=True)

    def _save(self) -> None:
        self.records_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.records_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.records))
        tmp.replace(self.records_path)
