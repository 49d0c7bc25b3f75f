"""Fine-tune MiniLM on one task (full fine-tuning, fixed seed) and cache encoder + head.

Recipe: 200 AdamW steps (lr 5e-5, no schedule, weight decay 0.01), batch 16, sequences truncated to
64 tokens, cross-entropy loss; batches are drawn from seeded per-epoch permutations of the train split.

The folder's ``DONE_MARKER`` (written atomically, last) is JSON: ``seconds`` and, when given, ``inputs``
(the fingerprint of the settings, the base's weight files and the training examples as ``training_rows``;
``benchmarks.harness.finetune_inputs``).  Markers of earlier versions hold the seconds alone as a plain
number; they are still read (``benchmarks.harness.finetune_inputs.read_marker``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from benchmarks.harness.finetune import train_steps
from benchmarks.harness.finetune_inputs import write_marker
from benchmarks.quality.encoder_io import save_encoder, save_head
from benchmarks.text_tasks.splits import Split


@dataclass(frozen=True)
class FinetuneSettings:
    steps: int = 200
    batch_size: int = 16
    max_length: int = 64
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    seed: int = 0
    log_every: int = 10


ENCODER_SUBDIR = "encoder"
HEAD_SUBDIR = "head"
DONE_MARKER = "finetune_done.txt"


def training_rows(class_names: Sequence[str], train: Split) -> List[List[Union[str, int]]]:
    """[text, label, class name] of each training example, in order (the inputs fingerprint's data)."""
    return [[text, label, class_names[label]] for text, label in zip(train.texts, train.labels)]


def is_cached(folder: Path) -> bool:
    return (folder / DONE_MARKER).exists()


def finetune_task(
    base_model_path: Path,
    task: str,
    class_names: Sequence[str],
    train: Split,
    out_folder: Path,
    settings: FinetuneSettings = FinetuneSettings(),
    inputs: Optional[Dict[str, Any]] = None,
) -> float:
    """Train, save ``out_folder/encoder`` and ``out_folder/head`` and the marker (seconds, ``inputs``: the
    fingerprint, when given); returns seconds spent training."""
    torch.manual_seed(settings.seed)
    tokenizer = AutoTokenizer.from_pretrained(str(base_model_path))
    import transformers

    # the encoder has no classification head yet: transformers' load report would list the new
    # head's weights as MISSING; say it once in plain words instead
    verbosity = transformers.utils.logging.get_verbosity()
    transformers.utils.logging.set_verbosity_error()
    try:
        model = AutoModelForSequenceClassification.from_pretrained(str(base_model_path), num_labels=len(class_names))
    finally:
        transformers.utils.logging.set_verbosity(verbosity)
    print(f"[finetune] {task}: a new {len(class_names)}-class head on the pretrained encoder "
          "(randomly initialised, trained with it)", flush=True)
    labels = torch.tensor(train.labels)

    def batch_loss(indices: torch.Tensor) -> torch.Tensor:
        batch = tokenizer(
            [train.texts[i] for i in indices.tolist()], padding=True, truncation=True,
            max_length=settings.max_length, return_tensors="pt",
        )
        return model(**batch, labels=labels[indices]).loss

    seconds, _ = train_steps(model, len(train), settings, batch_loss, task)
    out_folder.mkdir(parents=True, exist_ok=True)
    save_encoder(model, out_folder / ENCODER_SUBDIR)
    save_head(model, out_folder / HEAD_SUBDIR, task, class_names)
    write_marker(out_folder / DONE_MARKER, {"seconds": round(seconds, 1),
                                            **({} if inputs is None else {"inputs": inputs})})
    return seconds
