"""What the tracks' fine-tunes share: the seeded batch order, the AdamW loop with its progress lines,
and the cache of finished fine-tunes (one folder per task, complete when its marker file exists).

A track supplies the model, the loss of one batch and how a finished folder is written
(``benchmarks.quality.finetune``, ``benchmarks.llm.finetune``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch


def batch_order(n_examples: int, steps: int, batch_size: int, seed: int) -> torch.Tensor:
    """[steps, batch_size] example indices from concatenated seeded permutations."""
    generator = torch.Generator().manual_seed(seed)
    needed = steps * batch_size
    chunks = [torch.randperm(n_examples, generator=generator) for _ in range(-(-needed // n_examples))]
    return torch.cat(chunks)[:needed].view(steps, batch_size)


def train_steps(model: torch.nn.Module, n_examples: int, settings: Any,
                batch_loss: Callable[[torch.Tensor], torch.Tensor], task: str, loss_window: int = 1,
                checkpoint: Optional[Path] = None, checkpoint_every: int = 0) -> Tuple[float, List[float]]:
    """AdamW (``settings``: steps, batch_size, learning_rate, weight_decay, seed, log_every) over
    ``batch_order``; ``batch_loss(indices)`` is the loss of one batch.  Every ``log_every`` steps prints
    the mean loss of the last ``loss_window`` steps.  Returns (seconds, the loss of every step).

    ``checkpoint``: a file holding the model, the optimiser state, the step, the losses and the seconds
    so far, written (atomically) every ``checkpoint_every`` steps; a run that finds it continues from
    there (a killed fine-tune resumes: the batch order is a function of the step, the models have no
    dropout, so the resumed run takes the same steps as an uninterrupted one)."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    order = batch_order(n_examples, settings.steps, settings.batch_size, settings.seed)
    first, losses, seconds_before = _resume(model, optimizer, checkpoint, task, _settings_text(settings))
    start = time.perf_counter()
    for step in range(first, settings.steps):
        loss = batch_loss(order[step])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        done = step + 1
        if done % settings.log_every == 0 or done == settings.steps:
            elapsed = time.perf_counter() - start
            recent = losses[-loss_window:]
            print(f"[finetune] {task}: step {done}/{settings.steps} loss {sum(recent) / len(recent):.3f} "
                  f"({seconds_before + elapsed:.0f} s, ETA {elapsed / (done - first) * (settings.steps - done):.0f} s)",
                  flush=True)
        if checkpoint is not None and checkpoint_every and done % checkpoint_every == 0 and done < settings.steps:
            _save_checkpoint(checkpoint, model, optimizer, done, losses, seconds_before + time.perf_counter() - start,
                             _settings_text(settings))
    seconds = seconds_before + time.perf_counter() - start
    model.eval()
    return seconds, losses


def _settings_text(settings: Any) -> str:
    """The training settings as text: a checkpoint resumes only the run of the same settings."""
    return json.dumps(vars(settings) if not hasattr(settings, "__dataclass_fields__") else
                      {name: getattr(settings, name) for name in settings.__dataclass_fields__}, sort_keys=True)


def _resume(model: torch.nn.Module, optimizer: torch.optim.Optimizer, checkpoint: Optional[Path], task: str,
            settings: str) -> Tuple[int, List[float], float]:
    """(first step, losses so far, seconds so far) from ``checkpoint`` when it exists and was written with
    the same ``settings``, else (0, [], 0)."""
    if checkpoint is None or not checkpoint.exists():
        return 0, [], 0.0
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if state.get("settings") != settings:
        print(f"[finetune] {task}: the checkpoint was written with other settings; starting over", flush=True)
        return 0, [], 0.0
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    print(f"[finetune] {task}: resumed at step {int(state['step'])} ({float(state['seconds']):.0f} s so far)",
          flush=True)
    return int(state["step"]), [float(x) for x in state["losses"]], float(state["seconds"])


def _save_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int,
                     losses: List[float], seconds: float, settings: str) -> None:
    """The training state, written beside ``path`` and moved over it (never half written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                "losses": torch.tensor(losses, dtype=torch.float64), "seconds": seconds, "settings": settings}, partial)
    os.replace(partial, path)


def ensure_finetunes(tasks: Sequence[str], root: Path, marker: str, seconds_of: Callable[[str], Any],
                     build: Callable[[str, Path], None], current: Callable[[str], bool] = lambda text: True,
                     ) -> Dict[str, Path]:
    """task -> ``root/task``; ``build(task, folder)`` trains the ones whose ``marker`` is missing, or
    whose marker ``current(marker text)`` says was written for other settings, one after the other (an
    interrupted run resumes at the first unfinished task).  ``seconds_of(marker text)``: the training
    seconds a cached folder's marker records, for the log."""
    folders: Dict[str, Path] = {}
    for task in tasks:
        folder = root / task
        text = (folder / marker).read_text() if (folder / marker).exists() else None
        if text is not None and current(text):
            print(f"[finetune] {task}: cached ({seconds_of(text)} s)", flush=True)
        else:
            if text is not None:
                print(f"[finetune] {task}: the cached fine-tune was trained with other settings: training again",
                      flush=True)
            build(task, folder)
        folders[task] = folder
    return folders
