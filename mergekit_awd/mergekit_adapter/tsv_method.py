"""The ``tsv`` merge method (TSV-Merge, arXiv 2412.00081) on mergekit, optionally after AWD.

Per selected 2-D tensor: the task matrices Δ_i = θ_i − θ_base (optionally disentangled first,
Δ_i − δ with AWD's δ solved on this tensor), TSV-M (``core.tsv.tsv_merge_matrices``), output
θ_base + λ · merged Δ.  Other tensors get the mean task vector (the paper's treatment of
non-matrix tensors).  Parameters: ``core.tsv.TSVParameters``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch
from mergekit.merge_methods.base import TensorGroup

from mergekit_awd.constants import TSV_REPORT
from mergekit_awd.core.selection import is_disentangled
from mergekit_awd.core.task_vectors import mean_task_vector, task_vector_stack
from mergekit_awd.core.tsv import TSVParameters, remove_redundant_vector, tsv_merge_matrices
from mergekit_awd.mergekit_adapter.method import PackageMergeMethod
from mergekit_awd.mergekit_adapter.report import MergeReport


def is_task_matrix(name: str, ndim: int, select: str, vocabulary_axis: Optional[int] = None) -> bool:
    """Whether TSV-M applies: a 2-D tensor chosen by ``select`` (``all`` adds no 1-D tensors here:
    a vector has no singular structure, so it is averaged like every other non-matrix)."""
    return ndim == 2 and is_disentangled(name, ndim, select, vocabulary_axis)


class TSVMerge(PackageMergeMethod):
    """TSV-Merge (arXiv 2412.00081), optionally after AWD disentanglement."""

    name = "tsv"
    pretty_name = "Task Singular Vectors Merge (TSV-M)"
    reference_url = "https://arxiv.org/abs/2412.00081"
    settings_class = TSVParameters
    weight_description = "w_i, per-model weight applied to the task matrix before its SVD"
    group_notes = {"solver": " (disentangle only)"}
    report_filename = TSV_REPORT
    inputs_must_be_finite = True

    def merge_tensor(self, group: TensorGroup, name: str, settings: TSVParameters, weights: List[float],
                     report: Optional[MergeReport]) -> torch.Tensor:
        base = group.base.tensor
        entries = group.non_base
        weights = [float(w) for w in weights]
        task_vectors = task_vector_stack(base, [e.tensor for e in entries], device=base.device)
        if not is_task_matrix(name, base.ndim, settings.select, group.metadata.vocabulary_axis):
            merged_delta = mean_task_vector(task_vectors, weights)
            if report is not None:
                report.record("averaged", name, {"tasks": len(entries)})
        else:
            if settings.disentangle:
                task_vectors, solve = remove_redundant_vector(task_vectors, settings.solver_settings())
                if report is not None:
                    report.record_scope(name, {"tensors": [name], **solve.summary()})
            try:
                result = tsv_merge_matrices(task_vectors, weights, settings.tsv_settings())
            except (ValueError, RuntimeError) as error:
                raise type(error)(f"{name}: {error}") from error
            merged_delta = result.delta
            if report is not None:
                report.record("interference", name, {
                    "svd": settings.svd, "disentangled": bool(settings.disentangle), **result.summary()})
        merged = base.to(merged_delta.dtype) + settings.lam * merged_delta
        return merged.to(base.dtype)

    def card_lines(self, report: Dict[str, Any], labels: List[str], out_dir: str) -> List[str]:
        from mergekit_awd.hub.card_sections import disentanglement_lines, interference_lines

        lines = disentanglement_lines(report, labels, out_dir) if report.get("scopes") else []
        return lines + interference_lines(report)


tsv_merge_method = TSVMerge()
