"""The model card's figures of a merge report, drawn for the parts a method names (``CardPart``).

``method_lines`` draws every part of ``PackageMergeMethod.card_parts`` in order:
``disentanglement_lines`` shows the pairwise |cos| of the task vectors before and after δ (a table
and ``CARD_HEATMAP``), ``section_lines`` the means of the figures of the method's ``report_section``
after its ``card_intro`` (filled with the STI or the solve branches for the parts that say so).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from mergekit_awd.constants import CARD_HEATMAP
from mergekit_awd.mergekit_adapter.card_parts import CardPart
from mergekit_awd.mergekit_adapter.method import PackageMergeMethod
from mergekit_awd.presentation.heatmap import HeatmapPanel, save_heatmaps

LOG = logging.getLogger(__name__)


def mean_cosine_matrices(report: Dict[str, Any]) -> Optional[Tuple[torch.Tensor, torch.Tensor, int]]:
    """Mean over solved scopes of the |cos| matrices before and after, and the scope count.

    ``scope: tensor`` has one scope per disentangled tensor (so this is the mean over tensors);
    ``scope: model`` has one scope (its matrices as they are).  None when nothing was solved.
    """
    before, after = [], []
    for entry in (report.get("scopes") or {}).values():
        if entry.get("active", 0) >= 2 and "abs_cos_before" in entry:
            before.append(torch.tensor(entry["abs_cos_before"], dtype=torch.float64))
            after.append(torch.tensor(entry["abs_cos_after"], dtype=torch.float64))
    if not before or len({m.shape for m in before}) != 1:
        return None
    return torch.stack(before).mean(0), torch.stack(after).mean(0), len(before)


def mean_delta_norm_ratio(report: Dict[str, Any]) -> Optional[float]:
    ratios = [e["delta_norm_ratio"] for e in (report.get("scopes") or {}).values()
              if e.get("active", 0) >= 2 and "delta_norm_ratio" in e]
    return sum(ratios) / len(ratios) if ratios else None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def section_means(report: Dict[str, Any], section: str) -> Tuple[Dict[str, float], int]:
    """Mean over tensors of every numeric figure in one section of the report.

    A list of numbers (one per task, such as ``energy_kept``) counts as its mean.
    """
    entries = list((report.get(section) or {}).values())
    sums: Dict[str, List[float]] = {}
    for entry in entries:
        values = entry.items() if isinstance(entry, dict) else [("interference", entry)]
        for key, value in values:
            if isinstance(value, list) and value and all(_is_number(v) for v in value):
                value = sum(value) / len(value)
            if _is_number(value):
                sums.setdefault(key, []).append(float(value))
    return {key: sum(v) / len(v) for key, v in sums.items()}, len(entries)


def cosine_table(labels: Sequence[str], before: torch.Tensor, after: torch.Tensor) -> str:
    """One row per pair of task vectors: |cos| before and after disentanglement."""
    rows = ["| task vector i | task vector j | abs cos before | abs cos after |", "| --- | --- | ---: | ---: |"]
    for i in range(len(labels)):
        for j in range(i + 1, len(labels)):
            rows.append(f"| {labels[i]} | {labels[j]} | {float(before[i, j]):.4f} | {float(after[i, j]):.4f} |")
    return "\n".join(rows)


def disentanglement_lines(report: Dict[str, Any], labels: List[str], out_dir: str) -> List[str]:
    summary = report.get("summary", {})
    parameters = report.get("parameters", {})
    lines = [
        f"Disentangled tensors: {summary.get('disentangled_tensors', 0)}; merged by plain task "
        f"arithmetic: {summary.get('task_arithmetic_tensors', 0)}.",
        "",
    ]
    matrices = mean_cosine_matrices(report)
    if matrices is None:
        lines.append("No tensor had two or more non-zero task vectors, so AWD removed nothing (δ = 0).")
        return lines
    before, after, count = matrices
    if len(labels) != before.shape[0]:
        labels = [f"τ{i + 1}" for i in range(before.shape[0])]
    if parameters.get("scope") == "model":
        how = "one δ over all selected tensors" if count == 1 else f"mean over {count} model-wide scopes"
    else:
        how = f"one δ per tensor; mean over the {count} disentangled tensors"
    ratio = mean_delta_norm_ratio(report)
    lines += [
        "### Task-vector cosines before and after disentanglement",
        "",
        f"Pairwise |cos(τᵢ, τⱼ)| of the task vectors τᵢ = θᵢ − θ_base and of the disentangled "
        f"vectors τ̂ᵢ = τᵢ − δ ({how}). Mean |cos| over pairs: "
        f"{summary.get('mean_abs_cos_before', 0.0):.4f} → {summary.get('mean_abs_cos_after', 0.0):.4f}"
        + (f"; ‖δ‖ / mean‖τᵢ‖ = {ratio:.4f}." if ratio is not None else "."),
        "",
        cosine_table(labels, before, after),
        "",
    ]
    try:
        save_heatmaps(
            os.path.join(out_dir, CARD_HEATMAP),
            [HeatmapPanel("before: |cos(τᵢ, τⱼ)|", before, labels, labels),
             HeatmapPanel("after: |cos(τ̂ᵢ, τ̂ⱼ)|", after, labels, labels)],
            title="Task-vector |cos| before and after AWD",
        )
        lines += [f"![Pairwise task-vector cosines before and after AWD]({CARD_HEATMAP})", ""]
    except ImportError:
        LOG.warning("matplotlib is not installed: the model card has no %s heatmap", CARD_HEATMAP)
    return lines


def section_lines(report: Dict[str, Any], section: str, title: str, intro: Sequence[str] = ()) -> List[str]:
    """A card section: ``title``, ``intro`` lines, and the mean of each figure of ``section``."""
    means, count = section_means(report, section)
    if not means:
        return []
    rows = [f"| {key} | {value:.6g} |" for key, value in sorted(means.items())]
    return [f"### {title}", "", *intro, f"Mean over the {count} tensors recorded in the report:", "",
            "| figure | mean |", "| --- | ---: |", *rows, ""]


def _intro(text: str) -> List[str]:
    return [text, ""] if text else []


def sti_intro(method: PackageMergeMethod, report: Dict[str, Any]) -> List[str]:
    """``card_intro`` with the STI summed over the section's matrices (none when it records no STI)."""
    means, count = section_means(report, method.report_section)
    if "sti" not in means:
        return []
    return _intro(method.card_intro.format(count=count, total=means["sti"] * count, mean=means["sti"]))


def branch_intro(method: PackageMergeMethod, report: Dict[str, Any]) -> List[str]:
    """``card_intro`` with how many matrices took the heterogeneous branch and the pseudo-inverse fallback."""
    entries = list((report.get(method.report_section) or {}).values())
    heterogeneous = sum(1 for e in entries if e.get("branch") == "heterogeneous")
    fallbacks = sum(1 for e in entries if e.get("pinv_fallback"))
    return _intro(method.card_intro.format(heterogeneous=heterogeneous, matrices=len(entries), fallbacks=fallbacks))


# (method, report, model labels, output folder) → the part's markdown lines
PartLines = Callable[[PackageMergeMethod, Dict[str, Any], List[str], str], List[str]]


def _means(intro: Callable[[PackageMergeMethod, Dict[str, Any]], List[str]]) -> PartLines:
    return lambda method, report, labels, out_dir: section_lines(
        report, method.report_section, method.card_title, intro(method, report))


def _disentanglement(method: PackageMergeMethod, report: Dict[str, Any], labels: List[str], out_dir: str) -> List[str]:
    return disentanglement_lines(report, labels, out_dir)


def _recorded_disentanglement(method: PackageMergeMethod, report: Dict[str, Any], labels: List[str],
                              out_dir: str) -> List[str]:
    return disentanglement_lines(report, labels, out_dir) if report.get("scopes") else []


PART_LINES: Dict[CardPart, PartLines] = {
    CardPart.DISENTANGLEMENT: _disentanglement,
    CardPart.RECORDED_DISENTANGLEMENT: _recorded_disentanglement,
    CardPart.SECTION_MEANS: _means(lambda method, report: _intro(method.card_intro)),
    CardPart.STI_MEANS: _means(sti_intro),
    CardPart.BRANCH_MEANS: _means(branch_intro),
}


def method_lines(method: PackageMergeMethod, report: Dict[str, Any], labels: List[str], out_dir: str) -> List[str]:
    """The markdown after the parameter table: each of ``method.card_parts``, drawn from the report."""
    return [line for part in method.card_parts for line in PART_LINES[part](method, report, labels, out_dir)]
