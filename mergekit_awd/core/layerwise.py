"""Layer-wise merge coefficients: one λ per task and per group of tensors (AdaMerging's layer-wise form).

AdaMerging (Yang et al., arXiv 2310.02575, eq. 4) merges with one coefficient per task i and layer g,

    θ(Λ) = θ_base + Σ_i Σ_g λ_{i,g} D_i^g,

where D_i^g is task i's part of the merge restricted to the tensors of group g: τ_i = θ_i − θ_base for
task arithmetic, and the disentangled τ̂_i = τ_i − δ for AWD AdaMerging (AWD paper, arXiv 2411.18729,
§4.3 and Tables 1–2, λ_{i,g} initialised at 0.3).  θ is linear in Λ, so ∂θ/∂λ_{i,g} = D_i^g and the
merged tensors are built from θ_base and the K parts without materialising K models.

Groups (``tensor_group``): ``embed`` (token and position embeddings), ``block.N`` (every tensor of the
N-th transformer block, as ``core.selection.block_number`` finds it), ``norm`` (the final
norm), ``head`` (the output head), ``other`` (anything else); ``grouping: "task"`` puts every tensor in
one group (one coefficient per task, AdaMerging's task-wise form).  Pure torch.
"""

from __future__ import annotations

from typing import Dict, List, Literal, Mapping, Sequence, Tuple

import torch

from mergekit_awd.core.selection import block_number

Grouping = Literal["layer", "task"]
GROUPINGS: Tuple[str, ...] = ("layer", "task")
# AWD AdaMerging's and AdaMerging's initial coefficient (the AWD paper initialises at 0.3 or 0.4)
INITIAL_COEFFICIENT = 0.3

_EMBED = ("embed_tokens", "embed_positions", "wte", "wpe", "word_embeddings", "position_embeddings",
          "token_type_embeddings", "embeddings.")
_HEAD = ("lm_head", "score.", "classifier.")
_FINAL_NORM = ("norm.", "ln_f.", "final_layer_norm", "LayerNorm")


def tensor_group(name: str, grouping: Grouping = "layer") -> str:
    """The group a tensor's coefficient belongs to (module docstring)."""
    if grouping == "task":
        return "all"
    block = block_number(name)
    if block is not None:
        return f"block.{int(block)}"
    if any(key in name for key in _EMBED):
        return "embed"
    if name.startswith(_HEAD):
        return "head"
    if any(key in name for key in _FINAL_NORM):
        return "norm"
    return "other"


def ordered_groups(names: Sequence[str], grouping: Grouping = "layer") -> List[str]:
    """The groups of ``names``: ``embed``, the blocks in order, ``norm``, ``head``, ``other`` (those present)."""
    present = {tensor_group(name, grouping) for name in names}
    blocks = sorted((g for g in present if g.startswith("block.")), key=lambda g: int(g.split(".")[1]))
    return ([g for g in ("embed",) if g in present] + blocks
            + [g for g in ("norm", "head", "other", "all") if g in present])


def initial_coefficients(tasks: int, groups: int, value: float = INITIAL_COEFFICIENT) -> torch.Tensor:
    """Λ⁰ [K, G] float32, every λ_{i,g} = ``value``."""
    return torch.full((tasks, groups), float(value), dtype=torch.float32)


def merged_tensor(base: torch.Tensor, parts: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """θ_base + Σ_i λ_i D_i for one tensor: ``parts`` [K, *shape], ``coefficients`` [K] (the column of
    the tensor's group; differentiable), in float32 (float64 for float64 inputs)."""
    dtype = torch.float64 if base.dtype == torch.float64 else torch.float32
    # one contraction over K: no [K, *shape] temporary (the parts are the largest thing in memory)
    return base.to(dtype) + torch.tensordot(coefficients.to(device=parts.device, dtype=dtype), parts.to(dtype), dims=1)


def merged_state(base: Mapping[str, torch.Tensor], parts: Mapping[str, torch.Tensor], coefficients: torch.Tensor,
                 group_index: Mapping[str, int]) -> Dict[str, torch.Tensor]:
    """θ(Λ) for every tensor of ``parts`` (the others: the base's), Λ = ``coefficients`` [K, G] and
    each tensor's group column ``group_index[name]``."""
    state = dict(base)
    for name, stacked in parts.items():
        state[name] = merged_tensor(base[name], stacked, coefficients[:, group_index[name]])
    return state


__all__ = ["Grouping", "GROUPINGS", "INITIAL_COEFFICIENT", "tensor_group", "ordered_groups",
           "initial_coefficients", "merged_tensor", "merged_state"]
