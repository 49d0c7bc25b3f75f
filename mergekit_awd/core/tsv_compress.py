"""TSV-Compress (TSV-C, Gargiulo et al., arXiv 2412.00081): one task matrix as a rank-k LoRA update.

Δ_i = θ_i − θ_base [m, n] is kept as its rank-k truncated SVD Δ̂_i = U_k Σ_k V_kᵀ, stored as the
LoRA factors B = U_k √Σ_k [m, k] and A = √Σ_k V_kᵀ [k, n] (``lora_factors``; for ``nn.Embedding``,
PEFT's transposed embedding factors).  The rank (``compression_rank``): a fixed ``rank``, or
k = ⌊fraction · min(m, n)⌋, or by default the paper's per-task budget k = ⌊min(m, n) / K⌋ (the rank
TSV-M keeps, ``core.tsv.kept_rank``).  Note that ``fraction`` here is a share of min(m, n), the
whole matrix's rank, while TSV-M's ``fraction`` is a share of the per-task budget r/K: compress
keeps each task on its own, so the budget is not divided among tasks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Literal, Optional, Tuple

import torch

from mergekit_awd.core.settings import setting, validate_settings
from mergekit_awd.core.tsv import SVD, TSVSettings, kept_rank, top_singular_triplets
from mergekit_awd.errors import InvalidSettingError

AdapterDtype = Literal["float32", "bfloat16", "float16"]
ADAPTER_DTYPES: Dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16,
                                          "float16": torch.float16}


@dataclass(frozen=True)
class CompressSettings:
    """The settings of ``compress`` (single source of their choices and ranges; the command's
    options are generated from them).  ``rank`` and ``fraction`` exclude each other; with neither,
    k is the paper's ⌊min(m, n) / K⌋."""

    rank: Optional[int] = setting(None, "LoRA rank k for every matrix (capped at min(m, n))", ge=1)
    fraction: Optional[float] = setting(
        None, "k = floor(fraction * min(m, n)); default: the paper's floor(min(m, n) / K)", gt=0, le=1)
    svd: SVD = setting("exact", "exact: torch.linalg.svd; lowrank: seeded randomized SVD")
    dtype: Optional[AdapterDtype] = setting(None, "dtype of the saved adapter tensors (default: the base model's)")

    def __post_init__(self) -> None:
        if self.rank is not None and self.fraction is not None:
            raise InvalidSettingError("give rank or fraction, not both", name="rank")
        validate_settings(self)


def compression_rank(rows: int, cols: int, models: int, rank: Optional[int], fraction: Optional[float]) -> int:
    """k for one matrix: fixed ``rank``, ⌊fraction · min(m, n)⌋, or the paper's ⌊min(m, n) / K⌋ (≥ 1)."""
    full = min(rows, cols)
    if rank is not None:
        return min(rank, full)
    if fraction is not None:
        return max(1, min(full, math.floor(fraction * full * (1 + 1e-9))))
    return kept_rank(rows, cols, models)


def lora_factors(delta: torch.Tensor, k: int, settings: TSVSettings, kind: str, save_dtype: torch.dtype
                  ) -> Tuple[Dict[str, torch.Tensor], float]:
    """LoRA tensors (module-relative names, ``save_dtype``) for Δ ≈ U_k Σ_k V_kᵀ, and ‖Δ − Δ̂‖_F²
    with Δ̂ the product of the factors as saved."""
    triplets = top_singular_triplets(delta, k, settings)
    root = triplets.s.sqrt()
    left = triplets.u * root             # U √Σ   [m, k']
    right = root[:, None] * triplets.vh  # √Σ Vᵀ  [k', n]
    pad = k - triplets.rank              # numerically zero directions: zero columns keep rank k
    if pad:
        left = torch.cat([left, left.new_zeros(left.shape[0], pad)], dim=1)
        right = torch.cat([right, right.new_zeros(pad, right.shape[1])], dim=0)
    left, right = left.to(save_dtype), right.to(save_dtype)
    error_sq = float((delta.double() - left.double() @ right.double()).pow(2).sum())
    if kind == "linear":
        return {"lora_A.weight": right, "lora_B.weight": left}, error_sq
    return {"lora_embedding_A": left.T.contiguous(), "lora_embedding_B": right.T.contiguous()}, error_sq
