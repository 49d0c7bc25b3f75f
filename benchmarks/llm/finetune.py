"""Full fine-tuning of SmolLM2-135M-Instruct on one task (all weights, fixed seed), cached.

Recipe (``FinetuneSettings``): AdamW (lr 3e-5, weight decay 0.0, no schedule unless ``warmup_steps`` /
``decay: linear``), batch 8, causal-LM
cross-entropy on the answer tokens and the EOS token only (prompt tokens masked with -100), float32,
batches drawn from seeded permutations of the train split.  The folder is written with
``save_pretrained`` in float32 (tied embeddings: one ``embed_tokens``), with the base's tokenizer,
like a fine-tune published on the Hub.

The folder's ``DONE_MARKER`` (written atomically, last) records the seconds, the settings, the last
losses and ``inputs``: the fingerprint of the settings, the base's weight files and the training examples
(``benchmarks.harness.finetune_inputs``; ``training_rows`` are the examples as fingerprinted), which
``benchmarks.llm.models.ensure_finetunes`` compares before it answers from the cache.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from benchmarks.harness.finetune import train_steps
from benchmarks.harness.finetune_inputs import settings_dict, write_marker
from benchmarks.llm.tasks import Example, training_text
from mergekit_awd.tools.lm_scoring import encode_continuation, encode_prompt

DONE_MARKER = "finetune_done.json"
IGNORE = -100


@dataclass(frozen=True)
class FinetuneSettings:
    steps: int = 130
    batch_size: int = 8
    learning_rate: float = 3e-5
    weight_decay: float = 0.0
    seed: int = 0
    log_every: int = 10
    # added later (left out of the recorded settings at their defaults, so older caches still answer):
    warmup_steps: int = field(default=0, metadata={"added_later": True})   # linear warm-up from 0 to the lr
    decay: str = field(default="constant", metadata={"added_later": True})  # "linear": to 0 at the last step


def training_batch(tokenizer, examples: Sequence[Example]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """input_ids, attention_mask, labels (right-padded; loss on answer + EOS tokens only)."""
    rows: List[Tuple[List[int], List[int]]] = []
    for example in examples:
        prompt, answer = training_text(example)
        p = encode_prompt(tokenizer, prompt)
        a = encode_continuation(tokenizer, answer) + [tokenizer.eos_token_id]
        rows.append((p + a, [IGNORE] * len(p) + a))
    width = max(len(ids) for ids, _ in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    for r, (seq, lab) in enumerate(rows):
        ids[r, :len(seq)] = torch.tensor(seq)
        mask[r, :len(seq)] = 1
        labels[r, :len(seq)] = torch.tensor(lab)
    return ids, mask, labels


def training_rows(examples: Sequence[Example]) -> List[List[str]]:
    """[prompt, answer] of each example, in order: what a fine-tune learns (its inputs fingerprint)."""
    return [list(training_text(example)) for example in examples]


def is_cached(folder: Path) -> bool:
    return (folder / DONE_MARKER).exists()


def finetune_task(
    base_dir: Path, task: str, train: Sequence[Example], out_folder: Path,
    settings: FinetuneSettings = FinetuneSettings(), checkpoint_every: int = 0,
    inputs: Optional[Dict[str, Any]] = None,
) -> Dict[str, object]:
    """Train and save; returns the record written to ``DONE_MARKER`` (seconds, settings, last losses,
    ``inputs``: the fingerprint, when given).  ``checkpoint_every``: steps between checkpoints
    (``OUT_FOLDER.checkpoint.pt`` beside the folder, keyed by settings and ``inputs``, removed when the
    fine-tune is saved), from which a killed fine-tune resumes; 0: none."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(settings.seed)
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)

    def batch_loss(indices: torch.Tensor) -> torch.Tensor:
        ids, mask, labels = training_batch(tokenizer, [train[i] for i in indices.tolist()])
        return model(input_ids=ids, attention_mask=mask, labels=labels).loss

    checkpoint = out_folder.with_name(out_folder.name + ".checkpoint.pt") if checkpoint_every else None
    seconds, losses = train_steps(model, len(train), settings, batch_loss, task, loss_window=settings.log_every,
                                  checkpoint=checkpoint, checkpoint_every=checkpoint_every, inputs=inputs)
    shutil.rmtree(out_folder, ignore_errors=True)
    out_folder.mkdir(parents=True)
    model.save_pretrained(str(out_folder))
    tokenizer.save_pretrained(str(out_folder))
    record = {
        "task": task, "seconds": round(seconds, 1), "seconds_per_step": round(seconds / settings.steps, 2),
        "train_examples": len(train), "settings": settings_dict(settings),
        "final_loss": round(sum(losses[-20:]) / len(losses[-20:]), 4),
        **({} if inputs is None else {"inputs": inputs}),
    }
    write_marker(out_folder / DONE_MARKER, record)
    if checkpoint is not None:
        checkpoint.unlink(missing_ok=True)
    return record
