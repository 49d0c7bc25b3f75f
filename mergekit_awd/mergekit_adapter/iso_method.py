"""The ``iso_c`` and ``iso_cts`` merge methods (isotropic merging, arXiv 2502.04959) on mergekit.

Per selected 2-D tensor: Iso-C or Iso-CTS of the task matrices (``core.iso``), output
θ_base + λ · merged; other tensors θ_base + λ · mean_i τ_i.  Parameters: ``core.iso``'s
``IsoCParameters`` and ``IsoCTSParameters``.  The report (``iso_report.json``) records, per tensor,
the mean singular value and the common and per-task ranks.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch
from mergekit.merge_methods.base import TensorGroup

from mergekit_awd.constants import ISO_REPORT
from mergekit_awd.core.iso import IsoCParameters, IsoCTSParameters, iso_c_matrices, iso_cts_matrices
from mergekit_awd.core.selection import is_disentangled
from mergekit_awd.core.task_vectors import mean_task_vector, task_vector_stack
from mergekit_awd.mergekit_adapter.method import PackageMergeMethod
from mergekit_awd.mergekit_adapter.report import MergeReport


class IsoCMerge(PackageMergeMethod):
    """Iso-C: isotropic merging in the common subspace (arXiv 2502.04959)."""

    name = "iso_c"
    pretty_name = "Iso-C (Isotropic Merging in Common Subspace)"
    reference_url = "https://arxiv.org/abs/2502.04959"
    settings_class = IsoCParameters
    weight_description = "w_i, per-model weight applied to the task vector"
    report_filename = ISO_REPORT
    inputs_must_be_finite = True

    def merge_matrices(self, task_vectors: torch.Tensor, weights: List[float], settings: Any):
        return iso_c_matrices(task_vectors, weights)

    def merge_tensor(self, group: TensorGroup, name: str, settings: IsoCParameters, weights: List[float],
                     report: Optional[MergeReport]) -> torch.Tensor:
        base = group.base.tensor
        weights = [float(w) for w in weights]
        task_vectors = task_vector_stack(base, [e.tensor for e in group.non_base], device=base.device)
        if base.ndim == 2 and is_disentangled(name, base.ndim, settings.select, group.metadata.vocabulary_axis):
            result = self.merge_matrices(task_vectors, weights, settings)
            merged_delta = result.delta
            if report is not None:
                report.record("isotropic", name, result.summary())
        else:
            merged_delta = mean_task_vector(task_vectors, weights)
            if report is not None:
                report.record("averaged", name, {"tasks": len(weights)})
        return (base.to(merged_delta.dtype) + settings.lam * merged_delta).to(base.dtype)

    def card_lines(self, report: Dict[str, Any], labels: List[str], out_dir: str) -> List[str]:
        from mergekit_awd.hub.card_sections import section_lines

        return section_lines(report, "isotropic", "Isotropic spectrum",
                             ["Every merged matrix has one singular value (their mean) in all its directions.", ""])


class IsoCTSMerge(IsoCMerge):
    """Iso-CTS: isotropic merging in common and task-specific subspaces (arXiv 2502.04959)."""

    name = "iso_cts"
    pretty_name = "Iso-CTS (Isotropic Merging in Common and Task-Specific Subspaces)"
    settings_class = IsoCTSParameters

    def merge_matrices(self, task_vectors: torch.Tensor, weights: List[float], settings: IsoCTSParameters):
        return iso_cts_matrices(task_vectors, weights, settings.common_space_fraction)


iso_c_merge_method = IsoCMerge()
iso_cts_merge_method = IsoCTSMerge()
