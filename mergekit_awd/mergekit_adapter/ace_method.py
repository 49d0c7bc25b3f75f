"""The ``ace`` merge method (ACE-Merging, arXiv 2603.02945) on mergekit.

Per selected 2-D tensor: the merged update from ``core.ace.ace_merge_matrices`` (the reference's
covariance-weighted solve, and in the heterogeneous branch its isotropic spectral correction),
output θ_base + λ · merged; other tensors θ_base + λ · mean_t τ_t.  Parameters:
``core.ace.AceParameters``.  The report (``ace_report.json``) records, per tensor, the branch, the
heterogeneity γ, how A was solved (``lu``, or the reference's ``pinv`` fallback for a singular A),
the solve's relative residual and the spectral correction's rank and singular value.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch

from mergekit_awd.constants import ACE_REPORT
from mergekit_awd.core.ace import AceParameters, AceResult, ace_merge_matrices
from mergekit_awd.core.costs import ace_work
from mergekit_awd.mergekit_adapter.method import MatrixMergeMethod
from mergekit_awd.mergekit_adapter.report import MergeReport


class AceMerge(MatrixMergeMethod):
    """ACE-Merging (arXiv 2603.02945)."""

    name = "ace"
    pretty_name = "ACE-Merging (Data-Free Model Merging with Adaptive Covariance Estimation)"
    reference_url = "https://arxiv.org/abs/2603.02945"
    settings_class = AceParameters
    report_filename = ACE_REPORT
    report_section = "ace"
    card_title = "ACE solve"

    def merge_matrices(self, name: str, task_vectors: torch.Tensor, weights: List[float], settings: AceParameters,
                       report: Optional[MergeReport]) -> AceResult:
        return ace_merge_matrices(task_vectors, weights, settings)

    faster_options = ("--cuda",)

    def matrix_work(self, rows: int, cols: int, tasks: int, settings: AceParameters) -> Dict[str, float]:
        return ace_work(rows, cols, tasks, settings)

    def card_lines(self, report: Dict[str, Any], labels: List[str], out_dir: str) -> List[str]:
        from mergekit_awd.hub.card_sections import section_lines

        entries = list((report.get(self.report_section) or {}).values())
        heterogeneous = sum(1 for e in entries if e.get("branch") == "heterogeneous")
        fallbacks = sum(1 for e in entries if e.get("pinv_fallback"))
        intro = [f"Heterogeneous branch (trace-normalised covariances and the isotropic spectral correction) "
                 f"on {heterogeneous} of {len(entries)} matrices, homogeneous on the rest; A solved by the "
                 f"pseudo-inverse fallback on {fallbacks}. γ is the heterogeneity var(log‖τ‖²) / mean(log‖τ‖²)²; "
                 "σ_iso the correction's singular value (weight units).", ""]
        return section_lines(report, self.report_section, self.card_title, intro)


ace_merge_method = AceMerge()
