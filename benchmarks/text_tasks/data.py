"""All tasks' splits in one place (loaded once per process)."""

from __future__ import annotations

from functools import lru_cache
from typing import Dict, Tuple

from benchmarks.text_tasks.splits import TaskSplits, make_splits
from benchmarks.text_tasks.tasks import TASK_NAMES, load_task


@lru_cache(maxsize=None)
def task_splits(task: str) -> Tuple[Tuple[str, ...], TaskSplits]:
    """(class names, splits) of a task."""
    data = load_task(task)
    return data.class_names, make_splits(task, data.class_names, data.texts)


def all_task_splits(tasks: Tuple[str, ...] = TASK_NAMES) -> Dict[str, Tuple[Tuple[str, ...], TaskSplits]]:
    return {task: task_splits(task) for task in tasks}
