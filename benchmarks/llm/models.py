"""Build (or reuse) the cached base folder and fine-tunes of the LLM track.

    python -m benchmarks.llm.models      (the base and the four fine-tunes, built when missing)
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

from benchmarks.harness.finetune import ensure_finetunes as ensure_cached
from benchmarks.llm.base_model import ensure_base_model
from benchmarks.llm.finetune import DONE_MARKER, FinetuneSettings, finetune_task
from benchmarks.llm.paths import FINETUNE_DIR
from benchmarks.llm.tasks import TASK_NAMES, task_splits


def ensure_finetunes(tasks: Sequence[str] = TASK_NAMES, root: Path = FINETUNE_DIR,
                     settings: FinetuneSettings = FinetuneSettings(), splits_of: Callable[[str, Any], Any] = task_splits,
                     checkpoint_every: int = 0, on_done: Optional[Callable[[str, Path, Path], None]] = None,
                     ) -> Dict[str, Path]:
    """task -> fine-tuned model folder; trains the missing ones, one after the other.  ``splits_of(task,
    tokenizer)``: the task's splits (the quick track's by default; the hard track passes its own);
    ``checkpoint_every``: see ``finetune_task``; ``on_done(task, base, folder)`` after each new one."""
    from transformers import AutoTokenizer

    base = ensure_base_model()
    tokenizer = AutoTokenizer.from_pretrained(str(base))

    def build(task: str, folder: Path) -> None:
        splits = splits_of(task, tokenizer)
        print(f"[finetune] {task}: {settings.steps} steps of {settings.batch_size} at lr {settings.learning_rate} "
              f"from {len(splits.train)} training examples", flush=True)
        record = finetune_task(base, task, splits.train, folder, settings, checkpoint_every=checkpoint_every)
        print(f"[finetune] {task}: done in {record['seconds']} s", flush=True)
        if on_done is not None:
            on_done(task, base, folder)

    def current(marker: str) -> bool:  # a cached fine-tune of other settings is not this one
        return json.loads(marker).get("settings") == asdict(settings)

    return ensure_cached(tasks, root, DONE_MARKER, lambda text: json.loads(text)["seconds"], build, current)


if __name__ == "__main__":
    ensure_finetunes()
