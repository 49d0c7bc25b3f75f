"""Build (or reuse) the cached fine-tunes and the pretrained encoder folder."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Dict, Sequence

from transformers import BertModel

from benchmarks.harness.finetune import ensure_finetunes as ensure_cached
from benchmarks.quality.finetune import DONE_MARKER, ENCODER_SUBDIR, HEAD_SUBDIR, finetune_task
from benchmarks.quality.paths import FINETUNE_DIR, PRETRAINED_ENCODER_DIR
from benchmarks.text_tasks.data import task_splits
from benchmarks.text_tasks.setup_data import pretrained_model_path


def ensure_pretrained_encoder(folder: Path = PRETRAINED_ENCODER_DIR) -> Path:
    """The base MiniLM saved as a plain BertModel folder (same layout as the fine-tuned encoders)."""
    if not (folder / "model.safetensors").exists():
        encoder = BertModel.from_pretrained(str(pretrained_model_path()), add_pooling_layer=True)
        encoder.save_pretrained(str(folder))
    return folder


def _build(task: str, folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    class_names, splits = task_splits(task)
    print(f"[finetune] {task}: training on {len(splits.train)} examples", flush=True)
    seconds = finetune_task(pretrained_model_path(), task, class_names, splits.train, folder)
    print(f"[finetune] {task}: done in {seconds:.0f} s", flush=True)


def ensure_finetunes(tasks: Sequence[str], root: Path = FINETUNE_DIR) -> Dict[str, Path]:
    """task -> folder holding ``encoder/`` and ``head/``; trains the missing ones."""
    return ensure_cached(tasks, root, DONE_MARKER, str.strip, _build)


def encoder_folder(task_folder: Path) -> Path:
    return task_folder / ENCODER_SUBDIR


def head_folder(task_folder: Path) -> Path:
    return task_folder / HEAD_SUBDIR
