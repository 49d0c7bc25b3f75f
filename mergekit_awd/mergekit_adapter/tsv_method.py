"""The ``tsv`` merge method (TSV-Merge, arXiv 2412.00081) on mergekit, optionally after AWD.

Per selected 2-D tensor: the task matrices Δ_i = θ_i − θ_base (optionally disentangled first,
Δ_i − δ with AWD's δ solved on this tensor), TSV-M (``core.tsv.tsv_merge_matrices``), output
θ_base + λ · merged Δ.  Other tensors get the mean task vector (the paper's treatment of
non-matrix tensors).  Parameters: ``core.tsv.TSVParameters``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch

from mergekit_awd.core.awd_delta import remove_redundant_vector
from mergekit_awd.core.tsv import TSVMergeResult, TSVParameters, tsv_merge_matrices, tsv_work
from mergekit_awd.mergekit_adapter.card_parts import CardPart
from mergekit_awd.mergekit_adapter.method import MatrixMergeMethod
from mergekit_awd.mergekit_adapter.report import MergeReport


class TSVMerge(MatrixMergeMethod):
    """TSV-Merge (arXiv 2412.00081), optionally after AWD disentanglement."""

    name = "tsv"
    pretty_name = "Task Singular Vectors Merge (TSV-M)"
    reference_url = "https://arxiv.org/abs/2412.00081"
    settings_class = TSVParameters
    weight_description = "w_i, per-model weight applied to the task matrix before its SVD"
    group_notes = {"solver": " (disentangle only)"}
    report_filename = "tsv_report.json"
    report_section = "interference"
    card_title = "Task interference"
    card_intro = ("Singular Task Interference (STI, weight units) summed over the {count} task matrices: "
                  "{total:.6g} (mean per matrix {mean:.6g}).")
    card_parts = (CardPart.RECORDED_DISENTANGLEMENT, CardPart.STI_MEANS)

    def merge_matrices(self, name: str, task_vectors: torch.Tensor, weights: List[float], settings: TSVParameters,
                       report: Optional[MergeReport]) -> TSVMergeResult:
        if settings.disentangle:
            task_vectors, solve = remove_redundant_vector(task_vectors, settings.solver_settings())
            if report is not None:
                report.record_scope(name, {"tensors": [name], **solve})
        try:
            return tsv_merge_matrices(task_vectors, weights, settings.tsv_settings())
        except (ValueError, RuntimeError) as error:
            raise type(error)(f"{name}: {error}") from error

    faster_options = ("svd: lowrank", "--cuda")

    def matrix_work(self, rows: int, cols: int, tasks: int, settings: TSVParameters) -> Dict[str, float]:
        work = tsv_work(rows, cols, tasks, settings.tsv_settings())
        if settings.disentangle:  # the Gram matrix of the task vectors and δ
            work["matmul"] = work.get("matmul", 0.0) + 2.0 * tasks * tasks * rows * cols
        return work

    def report_entry(self, settings: TSVParameters, result: TSVMergeResult) -> Dict[str, Any]:
        return {"svd": settings.svd, "disentangled": bool(settings.disentangle), **result.summary()}


tsv_merge_method = TSVMerge()
