"""What the tracks' fine-tunes share: the seeded batch order, the AdamW loop with its progress lines,
and the cache of finished fine-tunes (one folder per task, complete when its marker file exists).

A track supplies the model, the loss of one batch, how a finished folder is written
(``benchmarks.quality.finetune``, ``benchmarks.llm.finetune``) and the fingerprint of a task's inputs
(settings, base weights, training data: ``benchmarks.harness.finetune_inputs``).  A cached folder answers
only while the fingerprint its marker records equals the current one, and a checkpoint is resumed only by
a run of the same fingerprint; otherwise the task is trained again, with one line saying why.

Caches made before fingerprints were recorded (a marker without ``inputs``) are trusted on first use: the
folder is used as is, the current fingerprint is stamped into its marker, and one line says so and that
deleting the folder trains it again; from then on a change of the base or the data is detected.  A
checkpoint without a fingerprint is likewise resumed once (it is stamped at its next save).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from benchmarks.harness.finetune_inputs import difference, marker_verdict, read_marker, settings_dict, write_marker


def batch_order(n_examples: int, steps: int, batch_size: int, seed: int) -> torch.Tensor:
    """[steps, batch_size] example indices from concatenated seeded permutations."""
    generator = torch.Generator().manual_seed(seed)
    needed = steps * batch_size
    chunks = [torch.randperm(n_examples, generator=generator) for _ in range(-(-needed // n_examples))]
    return torch.cat(chunks)[:needed].view(steps, batch_size)


def train_steps(model: torch.nn.Module, n_examples: int, settings: Any,
                batch_loss: Callable[[torch.Tensor], torch.Tensor], task: str, loss_window: int = 1,
                checkpoint: Optional[Path] = None, checkpoint_every: int = 0,
                inputs: Optional[Mapping[str, Any]] = None) -> Tuple[float, List[float]]:
    """AdamW (``settings``: steps, batch_size, learning_rate, weight_decay, seed, log_every, and optionally
    the schedule's warmup_steps and decay: ``lr_factor``) over
    ``batch_order``; ``batch_loss(indices)`` is the loss of one batch.  Every ``log_every`` steps prints
    the mean loss of the last ``loss_window`` steps.  Returns (seconds, the loss of every step).

    ``checkpoint``: a file holding the model, the optimiser state, the step, the losses and the seconds
    so far, written (atomically) every ``checkpoint_every`` steps; a run that finds it continues from
    there (a killed fine-tune resumes: the batch order is a function of the step, the models have no
    dropout, so the resumed run takes the same steps as an uninterrupted one).  The checkpoint is keyed by
    the settings and ``inputs`` (the fingerprint, ``benchmarks.harness.finetune_inputs``): one of other
    settings or inputs is not resumed."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    order = batch_order(n_examples, settings.steps, settings.batch_size, settings.seed)
    key = _checkpoint_key(settings, inputs)
    first, losses, seconds_before = _resume(model, optimizer, checkpoint, task, key)
    start = time.perf_counter()
    for step in range(first, settings.steps):
        loss = batch_loss(order[step])
        optimizer.zero_grad()
        loss.backward()
        for group in optimizer.param_groups:
            group["lr"] = settings.learning_rate * lr_factor(settings, step)
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
                             key)
    seconds = seconds_before + time.perf_counter() - start
    model.eval()
    return seconds, losses


def lr_factor(settings: Any, step: int) -> float:
    """The schedule at 0-based ``step``: a linear warm-up over ``warmup_steps`` (absent: none) times, with
    ``decay: linear``, a linear decay to 0 at the last step (absent or ``constant``: 1)."""
    warmup = getattr(settings, "warmup_steps", 0)
    factor = min(1.0, (step + 1) / warmup) if warmup else 1.0
    if getattr(settings, "decay", "constant") == "linear":
        factor *= (settings.steps - step) / settings.steps
    return factor


def _checkpoint_key(settings: Any, inputs: Optional[Mapping[str, Any]]) -> Dict[str, str]:
    """The settings (and the inputs fingerprint, when given) as text: a checkpoint resumes only the run of
    the same ones."""
    key = {"settings": json.dumps(settings_dict(settings), sort_keys=True)}
    if inputs is not None:
        key["inputs"] = json.dumps(dict(inputs), sort_keys=True)
    return key


def _checkpoint_verdict(state: Mapping[str, Any], key: Mapping[str, str]) -> Optional[str]:
    """Why a checkpoint ``state`` is not the run of ``key`` (in words); None when it is.  One written
    before inputs were recorded is judged on its settings alone (trusted once)."""
    if state.get("settings") != key["settings"]:
        return "other settings"
    if "inputs" not in key or "inputs" not in state:
        return None
    return difference(json.loads(state["inputs"]), json.loads(key["inputs"]))


def _resume(model: torch.nn.Module, optimizer: torch.optim.Optimizer, checkpoint: Optional[Path], task: str,
            key: Mapping[str, str]) -> Tuple[int, List[float], float]:
    """(first step, losses so far, seconds so far) from ``checkpoint`` when it exists and was written with
    the same ``key`` (settings, inputs), else (0, [], 0)."""
    if checkpoint is None or not checkpoint.exists():
        return 0, [], 0.0
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    reason = _checkpoint_verdict(state, key)
    if reason is not None:
        print(f"[finetune] {task}: the checkpoint was written with {reason}; starting over", flush=True)
        return 0, [], 0.0
    if "inputs" in key and "inputs" not in state:
        print(f"[finetune] {task}: the checkpoint was written before its inputs were recorded; resumed as is "
              f"(delete {checkpoint} to start over)", flush=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    print(f"[finetune] {task}: resumed at step {int(state['step'])} ({float(state['seconds']):.0f} s so far)",
          flush=True)
    return int(state["step"]), [float(x) for x in state["losses"]], float(state["seconds"])


def _save_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int,
                     losses: List[float], seconds: float, key: Mapping[str, str]) -> None:
    """The training state and its ``key``, written beside ``path`` and moved over it (never half written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                "losses": torch.tensor(losses, dtype=torch.float64), "seconds": seconds, **key}, partial)
    os.replace(partial, path)


def ensure_finetunes(tasks: Sequence[str], root: Path, marker: str,
                     build: Callable[[str, Path, Dict[str, Any]], None],
                     inputs_of: Callable[[str], Dict[str, Any]]) -> Dict[str, Path]:
    """task -> ``root/task``; ``build(task, folder, inputs)`` trains, one after the other (an interrupted
    run resumes at the first unfinished task), the ones whose ``marker`` is missing or records another
    fingerprint than ``inputs_of(task)`` (the marker's ``inputs``; ``build`` writes them into it).  A marker
    without ``inputs`` (made before they were recorded) is trusted once and stamped (``_stamp``)."""
    folders: Dict[str, Path] = {}
    for task in tasks:
        folder = root / task
        path = folder / marker
        record = read_marker(path) if path.exists() else None
        inputs = inputs_of(task)
        reason = None if record is None else marker_verdict(record, inputs)
        if record is not None and reason is None:
            if "inputs" not in record:
                _stamp(path, record, inputs, task)
            else:
                print(f"[finetune] {task}: cached ({record.get('seconds')} s)", flush=True)
        else:
            if record is not None:
                print(f"[finetune] {task}: the cached fine-tune was trained with {reason}: training again",
                      flush=True)
            build(task, folder, inputs)
        folders[task] = folder
    return folders


def _stamp(path: Path, record: Dict[str, Any], inputs: Dict[str, Any], task: str) -> None:
    """Trust on first use: the current ``inputs`` written into a marker made before they were recorded."""
    write_marker(path, {**record, "inputs": inputs})
    print(f"[finetune] {task}: cached ({record.get('seconds')} s), made before its inputs were recorded: "
          f"trusted as is and stamped with them now (delete {path.parent} to train it again)", flush=True)
