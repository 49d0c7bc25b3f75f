"""The ``wudi`` merge method (WUDI-Merging, arXiv 2503.08099) on mergekit.

Per selected 2-D tensor: τ_m from ``core.wudi.wudi_merge_matrices`` (the reference's Adam or the
exact minimiser), output θ_base + λ τ_m; other tensors θ_base + λ · mean_i τ_i.  Parameters:
``core.wudi.WudiParameters``.  The report (``wudi_report.json``) records, per tensor, the
objective at the start (Σ_i τ_i) and at the end, the solver and its iterations.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import torch

from mergekit_awd.core.wudi import wudi_work
from mergekit_awd.core.wudi import WudiParameters, WudiResult, wudi_merge_matrices
from mergekit_awd.mergekit_adapter.method import MatrixMergeMethod
from mergekit_awd.mergekit_adapter.report import MergeReport


class WudiMerge(MatrixMergeMethod):
    """WUDI-Merging (arXiv 2503.08099)."""

    name = "wudi"
    pretty_name = "WUDI-Merging (Whoever Started the Interference Should End It)"
    reference_url = "https://arxiv.org/abs/2503.08099"
    settings_class = WudiParameters
    report_filename = "wudi_report.json"
    report_section = "wudi"
    card_title = "WUDI objective"
    card_intro = ("Σᵢ ‖(τ_m − τᵢ) τᵢᵀ‖² / ‖τᵢ‖² at the start (Σᵢ τᵢ) and at the merged τ_m "
                  "(squared weight units).")

    def merge_matrices(self, name: str, task_vectors: torch.Tensor, weights: List[float], settings: WudiParameters,
                       report: Optional[MergeReport]) -> WudiResult:
        return wudi_merge_matrices(task_vectors, weights, settings)

    faster_options = ("solver: exact", "--cuda")

    def matrix_work(self, rows: int, cols: int, tasks: int, settings: WudiParameters) -> Dict[str, float]:
        return wudi_work(rows, cols, tasks, settings)


wudi_merge_method = WudiMerge()
