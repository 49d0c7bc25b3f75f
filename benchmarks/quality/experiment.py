"""The MiniLM track's working context: tokenised splits, task heads and the scorer of a merged encoder
(each task's own head on it, accuracy); the protocol (λ path, record cache in
``~/.cache/mergekit-awd/benchmarks/merges/records.json``, final CLI merge) is the harness's ``Experiment``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence

import torch
from transformers import AutoTokenizer, BertModel

from benchmarks.harness.experiment import SPLIT_NAMES, Correct, Experiment, Scores, accuracies
from benchmarks.harness.lambda_path import State
from benchmarks.quality.encoder_io import load_encoder, load_head, with_state
from benchmarks.quality.evaluate import EncodedSplit, correct_per_task, encode_split
from benchmarks.quality.models import encoder_folder, ensure_finetunes, ensure_pretrained_encoder, head_folder
from benchmarks.quality.paths import MERGES_DIR
from benchmarks.text_tasks.data import task_splits
from benchmarks.text_tasks.setup_data import pretrained_model_path
from benchmarks.text_tasks.splits import balanced_subset
from benchmarks.text_tasks.tasks import TASK_NAMES


class Benchmark(Experiment):
    """Fine-tunes (encoder + head per task), pretrained encoder, tokenised splits and the record cache;
    the encoders are merged, each task scored with its own head."""

    def __init__(self, tasks: Sequence[str], task_folders: Mapping[str, Path], pretrained_dir: Path,
                 tokenizer_path: Path, validation_per_task: Optional[int] = None,
                 merges_dir: Path = MERGES_DIR) -> None:
        self.task_folders = dict(task_folders)
        super().__init__(tasks, pretrained_dir, {t: encoder_folder(self.task_folders[t]) for t in tasks}, merges_dir,
                         fingerprint_suffix=f"-v{validation_per_task}")
        self.pretrained_dir = pretrained_dir
        self._encoder: Optional[BertModel] = None  # the pretrained encoder's architecture, weights set per state
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

    def score(self, encoder: BertModel, split: str, tasks: Sequence[str]) -> Scores:
        """Each task's head on ``encoder``: accuracy on ``split``."""
        return accuracies(self.correct(encoder, split, tasks))

    def correct(self, encoder: BertModel, split: str, tasks: Sequence[str]) -> Correct:
        """Each task's head on ``encoder``: 0/1 per example of ``split`` (timed as scoring)."""
        with self.timed("scoring"), torch.inference_mode():
            return correct_per_task(encoder, self.heads, self.encoded[split], tasks)

    def correct_state(self, state: State, split: str, tasks: Sequence[str]) -> Correct:
        if self._encoder is None:
            self._encoder = load_encoder(self.pretrained_dir)
        return self.correct(with_state(self._encoder, state), split, tasks)

    def correct_folder(self, folder: Path, split: str, tasks: Sequence[str]) -> Correct:
        return self.correct(load_encoder(folder), split, tasks)


def six_task_benchmark(validation_per_task: Optional[int]) -> Benchmark:
    """The Benchmark over the six tasks; the pretrained encoder folder and the fine-tunes are built
    when missing."""
    tasks = list(TASK_NAMES)
    pretrained_dir = ensure_pretrained_encoder()
    return Benchmark(tasks, ensure_finetunes(tasks), pretrained_dir, pretrained_model_path(),
                     validation_per_task=validation_per_task)
