"""What the tracks' fine-tunes share: the seeded batch order, the AdamW loop with its progress lines,
and the cache of finished fine-tunes (one folder per task, complete when its marker file exists).

A track supplies the model, the loss of one batch and how a finished folder is written
(``benchmarks.quality.finetune``, ``benchmarks.llm.finetune``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple

import torch


def batch_order(n_examples: int, steps: int, batch_size: int, seed: int) -> torch.Tensor:
    """[steps, batch_size] example indices from concatenated seeded permutations."""
    generator = torch.Generator().manual_seed(seed)
    needed = steps * batch_size
    chunks = [torch.randperm(n_examples, generator=generator) for _ in range(-(-needed // n_examples))]
    return torch.cat(chunks)[:needed].view(steps, batch_size)


def train_steps(model: torch.nn.Module, n_examples: int, settings: Any,
                batch_loss: Callable[[torch.Tensor], torch.Tensor], task: str, loss_window: int = 1,
                ) -> Tuple[float, List[float]]:
    """AdamW (``settings``: steps, batch_size, learning_rate, weight_decay, seed, log_every) over
    ``batch_order``; ``batch_loss(indices)`` is the loss of one batch.  Every ``log_every`` steps prints
    the mean loss of the last ``loss_window`` steps.  Returns (seconds, the loss of every step)."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    order = batch_order(n_examples, settings.steps, settings.batch_size, settings.seed)
    start = time.perf_counter()
    losses: List[float] = []
    for step, indices in enumerate(order):
        loss = batch_loss(indices)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        done = step + 1
        if done % settings.log_every == 0 or done == settings.steps:
            elapsed = time.perf_counter() - start
            recent = losses[-loss_window:]
            print(f"[finetune] {task}: step {done}/{settings.steps} loss {sum(recent) / len(recent):.3f} "
                  f"({elapsed:.0f} s, ETA {elapsed / done * (settings.steps - done):.0f} s)", flush=True)
    seconds = time.perf_counter() - start
    model.eval()
    return seconds, losses


def ensure_finetunes(tasks: Sequence[str], root: Path, marker: str, seconds_of: Callable[[str], Any],
                     build: Callable[[str, Path], None]) -> Dict[str, Path]:
    """task -> ``root/task``; ``build(task, folder)`` trains the ones whose ``marker`` is missing, one
    after the other (an interrupted run resumes at the first unfinished task).  ``seconds_of(marker
    text)``: the training seconds a cached folder's marker records, for the log."""
    folders: Dict[str, Path] = {}
    for task in tasks:
        folder = root / task
        if (folder / marker).exists():
            print(f"[finetune] {task}: cached ({seconds_of((folder / marker).read_text())} s)", flush=True)
        else:
            build(task, folder)
        folders[task] = folder
    return folders
