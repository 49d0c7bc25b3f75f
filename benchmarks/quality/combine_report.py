"""The sections of ``quality.md`` on AWD in front of other methods (issue #14): the issue's targets, per-task
test accuracy (where the page has no per-task table yet), AWD in front of X against X alone (overall and per
task), mean |cos| of the task vectors before and after AWD at each granularity, all read from the run's
results mapping."""

from __future__ import annotations

from typing import Any, List, Mapping, Sequence

from benchmarks.harness.intervals import COMBINE_PAIRS
from benchmarks.harness.report import combine_pair_table, difference_note, table
from benchmarks.quality.report import SHORT

TIES_MARGIN_TARGET = 2.0  # normalized points, issue #14
TARGET_XS = ("ties", "tsv")


def is_awd_variant(name: str, entry: Mapping[str, Any]) -> bool:
    """A row whose merge removes AWD's δ: awd at any scope or combine, tsv with ``disentangle``."""
    params = entry.get("params", {})
    return params.get("merge_method") == "awd" or bool(params.get("disentangle"))


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def _signed(value: float) -> str:
    return f"{100 * value:+.1f}"


def per_task_table(methods: Mapping[str, Any], individual: Mapping[str, float], tasks: Sequence[str]) -> List[str]:
    header = ["method", *[SHORT.get(t, t) for t in tasks], "avg", "normalized"]
    rows = [["fine-tunes (each on its own task)", *[_pct(individual[t]) for t in tasks],
             _pct(sum(individual[t] for t in tasks) / len(tasks)), "100.0"]]
    for name, entry in sorted(methods.items(), key=lambda item: -item[1]["normalized_avg"]):
        rows.append([name, *[_pct(entry["tasks"][t]) for t in tasks], _pct(entry["avg"]),
                     _pct(entry["normalized_avg"])])
    return table(header, rows)


def pair_table(methods: Mapping[str, Any], tasks: Sequence[str]) -> List[str]:
    """AWD + X minus X: normalized points overall (with the paired interval) and accuracy points per task (test)."""
    return combine_pair_table(methods, tasks, SHORT)


def _scope(entry: Mapping[str, Any]) -> str:
    resolved = entry.get("resolved_params") or {}
    return str(entry["params"].get("scope") or resolved.get("scope") or "tensor")


def cosine_table(methods: Mapping[str, Any]) -> List[str]:
    """Mean |cos| of the task vectors before and after removing δ, per AWD row: at scope tensor the
    cosine of flattened tensors averaged over tensors, at scope row the cosine of matching rows
    averaged over rows and tensors (the merge's report summary)."""
    rows = []
    for name, entry in methods.items():
        cos = entry.get("task_vector_abs_cos") or {}
        if is_awd_variant(name, entry) and "mean_abs_cos_before" in cos:
            rows.append([name, _scope(entry), f"{cos['mean_abs_cos_before']:.4f}", f"{cos['mean_abs_cos_after']:.4f}"])
    return table(["method", "granularity (scope)", "mean \\|cos\\| before", "after"], rows) if rows else []


def targets(methods: Mapping[str, Any]) -> List[str]:
    lines: List[str] = []
    awd = {n: e for n, e in methods.items() if is_awd_variant(n, e)}
    if "ties" in methods and awd:
        best = max(awd, key=lambda n: awd[n]["normalized_avg"])
        margin = 100 * (awd[best]["normalized_avg"] - methods["ties"]["normalized_avg"])
        lines.append(f"- Best AWD variant vs `ties`: {best} {margin:+.1f} normalized points"
                     f"{difference_note(awd[best], 'ties')} (target +{TIES_MARGIN_TARGET:.1f}: "
                     f"{'met' if margin >= TIES_MARGIN_TARGET else 'missed'}).")
    for plain in TARGET_XS:
        fronts = [f for p, f in COMBINE_PAIRS if p == plain and f in methods]
        if plain in methods and fronts:
            diffs = ", ".join(f"{f} {_signed(methods[f]['normalized_avg'] - methods[plain]['normalized_avg'])}"
                              f"{difference_note(methods[f], plain)}" for f in fronts)
            met = any(methods[f]["normalized_avg"] > methods[plain]["normalized_avg"] for f in fronts)
            lines.append(f"- AWD + {plain} > {plain}: {diffs} ({'met' if met else 'missed'}).")
    return lines


def combine_sections(results: Mapping[str, Any], tasks: Sequence[str], per_task: bool = True) -> List[str]:
    methods, individual = results["methods"], results["individual"]
    lines: List[str] = ["## Targets (issue #14, test split)", "", *targets(methods), ""]
    if per_task:
        lines += ["## Test accuracy per task (%)", "", *per_task_table(methods, individual, tasks), ""]
    pairs = pair_table(methods, tasks)
    if pairs:
        lines += ["## AWD in front of X, minus X alone (test; normalized points with the paired 95 % interval, "
                  "accuracy points per task)", "",
                  *pairs, ""]
    cosines = cosine_table(methods)
    if cosines:
        lines += ["## Mean |cos| between task vectors before and after AWD, per granularity", "",
                  "At scope tensor the cosine is between whole flattened tensors (averaged over tensors); at scope "
                  "row between matching rows (averaged over rows, then tensors): row cosines of the same task "
                  "vectors are not comparable in size with tensor cosines, only before against after.", "",
                  *cosines, ""]
    return lines

