"""Task subsets for the "accuracy vs number of merged tasks" curve."""

from __future__ import annotations

import itertools
import random
from typing import List, Sequence, Tuple


def task_subsets(tasks: Sequence[str], k: int, count: int, seed: int = 0) -> List[Tuple[str, ...]]:
    """``count`` distinct K-subsets of ``tasks`` drawn with ``random.Random(f"subsets/{k}/{seed}")``
    (all of them when fewer exist), each in the tasks' order."""
    combos = list(itertools.combinations(tasks, k))
    if count >= len(combos):
        return combos
    return sorted(random.Random(f"subsets/{k}/{seed}").sample(combos, count), key=combos.index)
