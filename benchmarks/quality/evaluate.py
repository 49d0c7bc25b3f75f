"""Accuracy of an encoder + task head on a split.

Texts are tokenised once (truncated to 64 tokens, like training), sorted by length and scored in
batches with the attention mask, so padding does not change a prediction.  accuracy = (#argmax
logit == label) / #examples.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence

import torch
from transformers import BertModel, PreTrainedTokenizerBase

from benchmarks.quality.encoder_io import HeadedEncoder, attach_head, load_encoder
from benchmarks.text_tasks.splits import Split

MAX_LENGTH = 64
EVAL_BATCH_SIZE = 64


@dataclass(frozen=True)
class EncodedSplit:
    """A split tokenised once: batches of model inputs (length-sorted), the labels in batch order and,
    per batch position, the example's index in the split (``order``)."""

    batches: List[Dict[str, torch.Tensor]]
    labels: torch.Tensor
    order: List[int]


def encode_split(
    tokenizer: PreTrainedTokenizerBase, split: Split, max_length: int = MAX_LENGTH,
    batch_size: int = EVAL_BATCH_SIZE,
) -> EncodedSplit:
    ids = tokenizer(list(split.texts), truncation=True, max_length=max_length)["input_ids"]
    order = sorted(range(len(ids)), key=lambda i: (len(ids[i]), i))
    batches = []
    for start in range(0, len(order), batch_size):
        chunk = [ids[i] for i in order[start:start + batch_size]]
        batches.append(tokenizer.pad({"input_ids": chunk}, return_tensors="pt"))
    labels = torch.tensor([split.labels[i] for i in order], dtype=torch.long)
    return EncodedSplit(batches=batches, labels=labels, order=order)


@torch.no_grad()
def predict(model: HeadedEncoder, encoded: EncodedSplit) -> torch.Tensor:
    """Predicted class ids, in the order of ``encoded.labels``."""
    model.eval()
    return torch.cat([model(**batch).argmax(dim=-1) for batch in encoded.batches])


def accuracy(model: HeadedEncoder, encoded: EncodedSplit) -> float:
    """Fraction of examples whose argmax logit equals the label."""
    correct = int((predict(model, encoded) == encoded.labels).sum())
    return correct / len(encoded.labels)


def correct(model: HeadedEncoder, encoded: EncodedSplit) -> List[int]:
    """1 where the argmax logit equals the label, else 0, in the split's order (not the batches')."""
    hits = (predict(model, encoded) == encoded.labels).tolist()
    result = [0] * len(hits)
    for position, index in enumerate(encoded.order):
        result[index] = int(hits[position])
    return result


def correct_per_task(
    encoder: BertModel, heads: Dict[str, Dict[str, torch.Tensor]], encoded: Dict[str, EncodedSplit],
    tasks: Sequence[str],
) -> Dict[str, List[int]]:
    """One shared encoder, each task's examples scored with its own head: 0/1 per example."""
    return {task: correct(attach_head(encoder, heads[task]), encoded[task]) for task in tasks}


def accuracy_per_task(
    encoder: BertModel, heads: Dict[str, Dict[str, torch.Tensor]], encoded: Dict[str, EncodedSplit],
    tasks: Sequence[str],
) -> Dict[str, float]:
    """One shared encoder, each task scored with its own head."""
    return {task: accuracy(attach_head(encoder, heads[task]), encoded[task]) for task in tasks}


def accuracy_of_folder(
    encoder_dir: Path, heads: Dict[str, Dict[str, torch.Tensor]], encoded: Dict[str, EncodedSplit],
    tasks: Sequence[str],
) -> Dict[str, float]:
    return accuracy_per_task(load_encoder(encoder_dir), heads, encoded, tasks)
