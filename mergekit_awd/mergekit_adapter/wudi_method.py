"""The ``wudi`` merge method (WUDI-Merging, arXiv 2503.08099) on mergekit.

Per selected 2-D tensor: τ_m from ``core.wudi.wudi_merge_matrices`` (the reference's Adam or the
exact minimiser), output θ_base + λ τ_m; other tensors θ_base + λ · mean_i τ_i.  Parameters:
``core.wudi.WudiParameters``.  The report (``wudi_report.json``) records, per tensor, the
objective at the start (Σ_i τ_i) and at the end, and the solver's iterations.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch
from mergekit.merge_methods.base import TensorGroup

from mergekit_awd.constants import WUDI_REPORT
from mergekit_awd.core.selection import is_disentangled
from mergekit_awd.core.task_vectors import mean_task_vector, task_vector_stack
from mergekit_awd.core.wudi import WudiParameters, wudi_merge_matrices
from mergekit_awd.mergekit_adapter.method import PackageMergeMethod
from mergekit_awd.mergekit_adapter.report import MergeReport


class WudiMerge(PackageMergeMethod):
    """WUDI-Merging (arXiv 2503.08099)."""

    name = "wudi"
    pretty_name = "WUDI-Merging (Whoever Started the Interference Should End It)"
    reference_url = "https://arxiv.org/abs/2503.08099"
    settings_class = WudiParameters
    weight_description = "w_i, per-model weight applied to the task vector"
    report_filename = WUDI_REPORT
    inputs_must_be_finite = True

    def merge_tensor(self, group: TensorGroup, name: str, settings: WudiParameters, weights: List[float],
                     report: Optional[MergeReport]) -> torch.Tensor:
        base = group.base.tensor
        weights = [float(w) for w in weights]
        task_vectors = task_vector_stack(base, [e.tensor for e in group.non_base], device=base.device)
        if base.ndim == 2 and is_disentangled(name, base.ndim, settings.select, group.metadata.vocabulary_axis):
            result = wudi_merge_matrices(task_vectors, weights, settings)
            merged_delta = result.delta
            if report is not None:
                report.record("wudi", name, {"solver": settings.solver, **result.summary()})
        else:
            merged_delta = mean_task_vector(task_vectors, weights)
            if report is not None:
                report.record("averaged", name, {"tasks": len(weights)})
        return (base.to(merged_delta.dtype) + settings.lam * merged_delta).to(base.dtype)

    def card_lines(self, report: Dict[str, Any], labels: List[str], out_dir: str) -> List[str]:
        from mergekit_awd.hub.card_sections import section_lines

        return section_lines(report, "wudi", "WUDI objective",
                             ["Σᵢ ‖(τ_m − τᵢ) τᵢᵀ‖² / ‖τᵢ‖² at the start (Σᵢ τᵢ) and at the merged τ_m "
                              "(squared weight units).", ""])


wudi_merge_method = WudiMerge()
