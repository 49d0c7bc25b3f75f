"""Build (or reuse) the cached fine-tunes and the pretrained encoder folder.

A cached fine-tune answers only for the inputs it was trained from: its marker's ``inputs`` (settings,
sha256 of the pretrained MiniLM folder's weight file(s), sha256 of the training texts, labels and class
names; ``benchmarks.harness.finetune_inputs``) must equal the current ones, else it is trained again with
one line saying why.  A marker of an earlier version (the seconds alone, a plain number) is trusted once
and rewritten as JSON with the current inputs (delete the folder to rebuild it).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Dict, Sequence

from transformers import BertModel

from benchmarks.harness.finetune import ensure_finetunes as ensure_cached
from benchmarks.harness.finetune_inputs import inputs_fingerprint, weights_digest
from benchmarks.quality.finetune import DONE_MARKER, ENCODER_SUBDIR, HEAD_SUBDIR, FinetuneSettings, finetune_task, \
    training_rows
from benchmarks.quality.paths import FINETUNE_DIR, PRETRAINED_ENCODER_DIR
from benchmarks.text_tasks.data import task_splits
from benchmarks.text_tasks.setup_data import pretrained_model_path


def ensure_pretrained_encoder(folder: Path = PRETRAINED_ENCODER_DIR) -> Path:
    """The base MiniLM saved as a plain BertModel folder (same layout as the fine-tuned encoders)."""
    if not (folder / "model.safetensors").exists():
        encoder = BertModel.from_pretrained(str(pretrained_model_path()), add_pooling_layer=True)
        encoder.save_pretrained(str(folder))
    return folder


def ensure_finetunes(tasks: Sequence[str], root: Path = FINETUNE_DIR,
                     settings: FinetuneSettings = FinetuneSettings()) -> Dict[str, Path]:
    """task -> folder holding ``encoder/`` and ``head/``; trains the missing ones and those of other inputs."""
    base = pretrained_model_path()
    base_sha256 = weights_digest(base)

    def build(task: str, folder: Path, inputs: Dict[str, Any]) -> None:
        shutil.rmtree(folder, ignore_errors=True)
        class_names, splits = task_splits(task)
        print(f"[finetune] {task}: training on {len(splits.train)} examples", flush=True)
        seconds = finetune_task(base, task, class_names, splits.train, folder, settings, inputs=inputs)
        print(f"[finetune] {task}: done in {seconds:.0f} s", flush=True)

    def inputs_of(task: str) -> Dict[str, Any]:
        class_names, splits = task_splits(task)
        return inputs_fingerprint(settings, base_sha256, training_rows(class_names, splits.train))

    return ensure_cached(tasks, root, DONE_MARKER, build, inputs_of)


def encoder_folder(task_folder: Path) -> Path:
    return task_folder / ENCODER_SUBDIR


def head_folder(task_folder: Path) -> Path:
    return task_folder / HEAD_SUBDIR
