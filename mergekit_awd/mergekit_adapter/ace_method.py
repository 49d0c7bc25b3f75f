"""The ``ace`` merge method (ACE-Merging, arXiv 2603.02945) on mergekit.

Per selected 2-D tensor: the merged update from ``core.ace.ace_merge_matrices`` (the reference's
covariance-weighted solve, and in the heterogeneous branch its isotropic spectral correction),
output θ_base + λ · merged; other tensors θ_base + λ · mean_t τ_t.  Parameters:
``core.ace.AceParameters``.  The report (``ace_report.json``) records, per tensor, the branch, the
heterogeneity γ, how A was solved (``lu``, or the reference's ``pinv`` fallback for a singular A),
the solve's relative residual and the spectral correction's rank and singular value.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import torch

from mergekit_awd.core.ace import AceParameters, AceResult, ace_merge_matrices
from mergekit_awd.core.ace import ace_work
from mergekit_awd.mergekit_adapter.card_parts import CardPart
from mergekit_awd.mergekit_adapter.method import MatrixMergeMethod
from mergekit_awd.mergekit_adapter.report import MergeReport


class AceMerge(MatrixMergeMethod):
    """ACE-Merging (arXiv 2603.02945)."""

    name = "ace"
    pretty_name = "ACE-Merging (Data-Free Model Merging with Adaptive Covariance Estimation)"
    reference_url = "https://arxiv.org/abs/2603.02945"
    settings_class = AceParameters
    report_filename = "ace_report.json"
    report_section = "ace"
    card_title = "ACE solve"
    card_intro = ("Heterogeneous branch (trace-normalised covariances and the isotropic spectral correction) "
                  "on {heterogeneous} of {matrices} matrices, homogeneous on the rest; A solved by the "
                  "pseudo-inverse fallback on {fallbacks}. γ is the heterogeneity var(log‖τ‖²) / mean(log‖τ‖²)²; "
                  "σ_iso the correction's singular value (weight units).")
    card_parts = (CardPart.BRANCH_MEANS,)

    def merge_matrices(self, name: str, task_vectors: torch.Tensor, weights: List[float], settings: AceParameters,
                       report: Optional[MergeReport]) -> AceResult:
        return ace_merge_matrices(task_vectors, weights, settings)

    faster_options = ("--cuda",)

    def matrix_work(self, rows: int, cols: int, tasks: int, settings: AceParameters) -> Dict[str, float]:
        return ace_work(rows, cols, tasks, settings)


ace_merge_method = AceMerge()
