"""Summaries of a merged model's per-task scores (accuracy in every track).

normalized accuracy (paper eq. 38): mean over tasks of acc_merged(t) / acc_individual(t), where
acc_individual(t) is task t's own fine-tune scored on the same split.
"""

from __future__ import annotations

from typing import Dict, Mapping, Sequence


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def average_accuracy(scores: Mapping[str, float], tasks: Sequence[str]) -> float:
    return mean([scores[t] for t in tasks])


def normalized_accuracy(scores: Mapping[str, float], individual: Mapping[str, float], tasks: Sequence[str]) -> float:
    return mean([scores[t] / individual[t] for t in tasks])


def summarise(scores: Mapping[str, float], individual: Mapping[str, float], tasks: Sequence[str]) -> Dict[str, float]:
    return {
        "avg": average_accuracy(scores, tasks),
        "normalized_avg": normalized_accuracy(scores, individual, tasks),
    }
