"""Rows of a track's results file: a method's test scores at its validation-chosen settings, a
reference (base or fine-tunes), a task subset, a validation grid."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

from benchmarks.harness.experiment import FinalMerge
from benchmarks.harness.scoring import summarise
from benchmarks.harness.selection import GridPoint


def cosine_summary(report: Optional[Mapping[str, Any]]) -> Optional[Dict[str, float]]:
    if not report:
        return None
    summary = report.get("summary", {})
    return {k: summary[k] for k in ("mean_abs_cos_before", "mean_abs_cos_after") if k in summary}


def method_entry(final: FinalMerge, chosen: GridPoint, individual_test: Mapping[str, float],
                 tasks: Sequence[str]) -> Dict[str, Any]:
    """One row of ``methods``: test accuracy at the validation-chosen settings."""
    scores = final.scores["test"]
    return {
        "tasks": scores,
        **summarise(scores, individual_test, tasks),
        "params": {"merge_method": final.spec.method, **final.spec.label()},
        "merge_seconds": final.seconds,
        "validation_normalized_avg": chosen.normalized_avg,
        "validation_avg": chosen.avg,
        "lambda_rescale_max_abs_diff": final.lambda_rescale_max_abs_diff,
        "task_vector_abs_cos": cosine_summary(final.report),
        "resolved_params": (final.report or {}).get("parameters"),
    }


def reference_entry(scores: Mapping[str, float], individual_test: Mapping[str, float],
                    tasks: Sequence[str]) -> Dict[str, Any]:
    return {"tasks": dict(scores), **summarise(scores, individual_test, tasks)}


def subset_entry(method: str, subset: Sequence[str], final: FinalMerge,
                 individual_test: Mapping[str, float]) -> Dict[str, Any]:
    scores = final.scores["test"]
    return {"method": method, "k": len(subset), "tasks": list(subset), "scores": scores,
            **summarise(scores, individual_test, subset), "merge_seconds": final.seconds}


def grid_entry(points: Sequence[GridPoint]) -> List[Dict[str, Any]]:
    return [p.to_json() for p in points]


def model_scope_cosines(report: Optional[Mapping[str, Any]], tasks: Sequence[str]) -> Optional[Dict[str, Any]]:
    """Pairwise |cos| of the task vectors before and after AWD at scope model (from its report)."""
    if report is None:
        return None
    scope = report["scopes"]["model"]
    return {"tasks": list(tasks), "abs_cos_before": scope["abs_cos_before"], "abs_cos_after": scope["abs_cos_after"]}
