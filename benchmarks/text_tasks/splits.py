"""Balanced, deterministic, disjoint train/validation/test splits of a task.

Per class the texts are sorted, shuffled with ``random.Random(f"{task}/{seed}")`` and cut in order:
test first, then validation, then train.  Test and validation sizes are spread over the classes as
evenly as possible (per-class counts differ by at most one); train takes the same number from every
class (the smallest class's remainder, capped).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

from benchmarks.text_tasks.tasks import ClassTexts

TEST_SIZE = 400
VALIDATION_SIZE = 240
TRAIN_CAP_PER_CLASS = 1600
SPLIT_SEED = 0


@dataclass(frozen=True)
class Split:
    """Texts with integer labels (index into the task's class names)."""

    texts: Tuple[str, ...]
    labels: Tuple[int, ...]

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class TaskSplits:
    train: Split
    validation: Split
    test: Split


def spread(total: int, n_classes: int) -> List[int]:
    """``total`` items over ``n_classes`` as evenly as possible, the remainder to the first classes."""
    base, remainder = divmod(total, n_classes)
    return [base + (1 if i < remainder else 0) for i in range(n_classes)]


def _as_split(per_class: Sequence[Sequence[str]], seed_key: str) -> Split:
    pairs = [(text, label) for label, texts in enumerate(per_class) for text in texts]
    random.Random(seed_key).shuffle(pairs)
    return Split(tuple(t for t, _ in pairs), tuple(label for _, label in pairs))


def make_splits(
    task: str,
    class_names: Sequence[str],
    texts: ClassTexts,
    test_size: int = TEST_SIZE,
    validation_size: int = VALIDATION_SIZE,
    train_cap_per_class: int = TRAIN_CAP_PER_CLASS,
    seed: int = SPLIT_SEED,
) -> TaskSplits:
    """Cut every class into test / validation / train; raises if a class is too small."""
    n_test = spread(test_size, len(class_names))
    n_val = spread(validation_size, len(class_names))
    shuffled: List[List[str]] = []
    for name in class_names:
        pool = sorted(set(texts[name]))
        random.Random(f"{task}/{name}/{seed}").shuffle(pool)
        shuffled.append(pool)
    remaining = [len(pool) - t - v for pool, t, v in zip(shuffled, n_test, n_val)]
    n_train = min(min(remaining), train_cap_per_class)
    if n_train <= 0:
        raise ValueError(f"{task}: a class is too small for test {test_size} + validation {validation_size}")
    test, validation, train = [], [], []
    for pool, t, v in zip(shuffled, n_test, n_val):
        test.append(pool[:t])
        validation.append(pool[t:t + v])
        train.append(pool[t + v:t + v + n_train])
    return TaskSplits(
        train=_as_split(train, f"{task}/train/{seed}"),
        validation=_as_split(validation, f"{task}/validation/{seed}"),
        test=_as_split(test, f"{task}/test/{seed}"),
    )


def split_summary(splits: TaskSplits, n_classes: int) -> Dict[str, object]:
    """Sizes and per-class counts, for the report."""
    def counts(split: Split) -> List[int]:
        return [split.labels.count(c) for c in range(n_classes)]

    return {
        name: {"size": len(split), "per_class": counts(split)}
        for name, split in (("train", splits.train), ("validation", splits.validation), ("test", splits.test))
    }


def balanced_subset(split: Split, size: int, n_classes: int) -> Split:
    """The first examples of each class in split order, ``spread(size, n_classes)`` of them per class."""
    quota = spread(size, n_classes)
    texts, labels = [], []
    for text, label in zip(split.texts, split.labels):
        if quota[label] > 0:
            quota[label] -= 1
            texts.append(text)
            labels.append(label)
    if any(quota):
        raise ValueError(f"split has too few examples for a balanced subset of {size}")
    return Split(tuple(texts), tuple(labels))
