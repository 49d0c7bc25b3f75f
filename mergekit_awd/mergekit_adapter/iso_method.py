"""The ``iso_c`` and ``iso_cts`` merge methods (isotropic merging, arXiv 2502.04959) on mergekit.

Per selected 2-D tensor: Iso-C or Iso-CTS of the task matrices (``core.iso``), output
θ_base + λ · merged; other tensors θ_base + λ · mean_i τ_i.  Parameters: ``core.iso``'s
``IsoCParameters`` and ``IsoCTSParameters``.  The report (``iso_report.json``) records, per tensor,
the mean singular value and the common and per-task ranks.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import torch

from mergekit_awd.core.iso import iso_work
from mergekit_awd.core.iso import (
    IsoCParameters, IsoCTSParameters, IsoResult, iso_c_matrices, iso_cts_matrices,
)
from mergekit_awd.mergekit_adapter.method import MatrixMergeMethod
from mergekit_awd.mergekit_adapter.report import MergeReport


class IsoCMerge(MatrixMergeMethod):
    """Iso-C: isotropic merging in the common subspace (arXiv 2502.04959)."""

    name = "iso_c"
    pretty_name = "Iso-C (Isotropic Merging in Common Subspace)"
    reference_url = "https://arxiv.org/abs/2502.04959"
    settings_class = IsoCParameters
    report_filename = "iso_report.json"
    report_section = "isotropic"
    card_title = "Isotropic spectrum"
    card_intro = "Every merged matrix has one singular value (their mean) in all its directions."

    def merge_matrices(self, name: str, task_vectors: torch.Tensor, weights: List[float], settings: IsoCParameters,
                       report: Optional[MergeReport]) -> IsoResult:
        return iso_c_matrices(task_vectors, weights)

    def matrix_work(self, rows: int, cols: int, tasks: int, settings: IsoCParameters) -> Dict[str, float]:
        return iso_work(rows, cols, tasks, getattr(settings, "common_space_fraction", None))


class IsoCTSMerge(IsoCMerge):
    """Iso-CTS: isotropic merging in common and task-specific subspaces (arXiv 2502.04959)."""

    name = "iso_cts"
    pretty_name = "Iso-CTS (Isotropic Merging in Common and Task-Specific Subspaces)"
    settings_class = IsoCTSParameters

    def merge_matrices(self, name: str, task_vectors: torch.Tensor, weights: List[float], settings: IsoCTSParameters,
                       report: Optional[MergeReport]) -> IsoResult:
        return iso_cts_matrices(task_vectors, weights, settings.common_space_fraction)


iso_c_merge_method = IsoCMerge()
iso_cts_merge_method = IsoCTSMerge()
