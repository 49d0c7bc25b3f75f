"""Paired bootstrap intervals for normalized merge scores (the evidence "A beats B" needs).

Per task t, each method m has a 0/1 correctness vector c_{m,t} over the same test examples, and the
task's fine-tune (the reference) has r_t.  A method's normalized score is

    N_m = (1/T) Σ_t mean(c_{m,t}) / mean(r_t)

(as the benchmarks' ``normalized_avg``).  One bootstrap resample draws, independently per task, n_t
example indices with replacement and uses the **same** indices for every method and the reference
(paired: the differences between methods see one resample of the data, not two); the 95 % interval
is the 2.5th and 97.5th percentile of N_m, and of N_a − N_b, over ``resamples`` resamples drawn from
a seeded generator (numpy's PCG64).  A resample where a task's reference scores 0 is left out of
every statistic (its ratio is undefined); the count is returned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Sequence, Tuple

import numpy as np

RESAMPLES = 10_000
SEED = 0


@dataclass(frozen=True)
class BootstrapResult:
    """Per method its normalized score's interval, per (a, b) the interval of N_a − N_b (fractions)."""

    normalized: Dict[str, Tuple[float, float]]
    differences: Dict[Tuple[str, str], Tuple[float, float]]
    resamples: int
    dropped: int  # resamples left out (a task's reference scored 0 there)

    def excludes_zero(self, a: str, b: str) -> bool:
        low, high = self.differences[(a, b)]
        return low > 0 or high < 0


def _as_matrix(vectors: Mapping[str, Sequence[float]], task: str, n: int) -> np.ndarray:
    values = np.asarray(vectors[task], dtype=np.float64)
    if values.shape != (n,):
        raise ValueError(f"task {task}: {values.shape[0]} results where the reference has {n}")
    return values


def paired_bootstrap(correct: Mapping[str, Mapping[str, Sequence[float]]], reference: Mapping[str, Sequence[float]],
                     pairs: Sequence[Tuple[str, str]] = (), resamples: int = RESAMPLES,
                     seed: int = SEED) -> BootstrapResult:
    """``correct[method][task]``: per-example results (0/1 or scores in [0, 1]); ``reference[task]``: the
    fine-tune's on the same examples; ``pairs``: (a, b) whose difference N_a − N_b gets an interval."""
    generator = np.random.Generator(np.random.PCG64(seed))
    tasks = list(reference)
    methods = list(correct)
    totals = {m: np.zeros(resamples) for m in methods}
    valid = np.ones(resamples, dtype=bool)
    for task in tasks:
        ref = np.asarray(reference[task], dtype=np.float64)
        n = ref.shape[0]
        indices = generator.integers(0, n, size=(resamples, n))
        ref_means = ref[indices].mean(axis=1)
        valid &= ref_means > 0
        safe = np.where(ref_means > 0, ref_means, 1.0)
        for method in methods:
            totals[method] += _as_matrix(correct[method], task, n)[indices].mean(axis=1) / safe
    scores = {m: totals[m][valid] / len(tasks) for m in methods}

    def interval(values: np.ndarray) -> Tuple[float, float]:
        low, high = np.percentile(values, [2.5, 97.5])
        return float(low), float(high)

    return BootstrapResult({m: interval(scores[m]) for m in methods},
                           {(a, b): interval(scores[a] - scores[b]) for a, b in pairs},
                           int(valid.sum()), int((~valid).sum()))


__all__ = ["paired_bootstrap", "BootstrapResult", "RESAMPLES", "SEED"]
